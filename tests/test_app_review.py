"""Review page and identity through AppTest: agreement figures, disagreements side by side, adjudication by a
reviewer only, roles, and Streamlit OIDC login when secrets.toml configures it."""

from __future__ import annotations

from storage import Annotation, RevisitLabel
from tests.app_helpers import app_test, no_exceptions, open_page


def open_review(name: str | None = "rita"):
    return open_page("pages/review.py", name)


def two_annotators_disagree(store, trace_id: str) -> None:
    store.save_annotation(trace_id, Annotation(annotator="ana", verdict="correct", note="**fine** <script>x</script>",
                                               revisit_labels=[RevisitLabel(0, "wrong_region",
                                                                            corrected_patches=[1, 2])]))
    store.save_annotation(trace_id, Annotation(annotator="bo", verdict="incorrect", revisit_labels=[
        RevisitLabel(0, "wrong_region", corrected_patches=[2, 3])]))


def test_review_without_data(app_env):
    at = open_review()
    assert any("two or more annotators" in i.value for i in at.info)
    assert any("No trace has disagreeing annotators" in s.value for s in at.success)


def test_disagreements_side_by_side_and_reviewer_adopts(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    two_annotators_disagree(app_env, tid)
    at = open_review("rita")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Annotators"] == "2" and metrics["Traces with ≥ 2 annotators"] == "1"
    assert metrics["Cohen's kappa (verdicts)"] == "0.000"  # one pair, different verdicts
    assert metrics["Mean IoU (corrected regions)"] == "0.333"  # {1,2} vs {2,3}
    assert at.selectbox(key="rev_pick").value == tid
    md = " ".join(m.value for m in at.markdown)
    assert "**ana**" in md and "**bo**" in md and "verdict **correct**" in md and "verdict **incorrect**" in md
    assert any(t.value == "**fine** <script>x</script>" for t in at.text)  # notes shown as plain text
    assert any("<|copy_1|> <|copy_2|>" in c.value for c in at.caption)
    assert any("R1 IoU 0.33" in c.value for c in at.caption)
    # an annotator can look but not adjudicate
    assert at.button(key="rev_adopt_bo").disabled
    app_env.add_annotator("rita", role="reviewer")
    at.run()
    assert not at.button(key="rev_adopt_bo").disabled
    at.button(key="rev_adopt_bo").click().run()
    no_exceptions(at)
    assert any("adopted" in s.value for s in at.success)
    head = app_env.get_annotation(tid)
    assert head.annotation.annotator == "rita" and head.annotation.verdict == "incorrect"
    assert head.is_consensus and head.annotation.label_for(0).corrected_patches == [2, 3]
    assert app_env.export_heads([tid])[tid].rule == "consensus"
    heads = app_env.heads_by_trace([tid])[tid]
    assert sorted(heads.annotators) == ["ana", "bo"] and heads.consensus.adopted_from == 2
    assert any("No trace has disagreeing annotators" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Annotators"] == "2"  # the ruling is not a third judgement


def test_reviewer_opens_a_disagreement_in_annotate(synthetic_trace, app_env):
    two_annotators_disagree(app_env, synthetic_trace.trace_id)
    app_env.add_annotator("rita", role="reviewer")
    at = open_review("rita")
    at.button(key="rev_open_bo").click().run()
    no_exceptions(at)
    assert at.title[0].value == "Annotate"
    assert at.session_state["_annot_trace"] == synthetic_trace.trace_id


def test_min_iou_filter_hides_small_region_differences(synthetic_trace, app_env):
    tid = synthetic_trace.trace_id
    for who, patches in (("ana", [1, 2, 3, 4]), ("bo", [1, 2, 3])):
        app_env.save_annotation(tid, Annotation(annotator=who, verdict="correct", revisit_labels=[
            RevisitLabel(0, "wrong_region", corrected_patches=patches)]))
    at = open_review()
    assert at.selectbox(key="rev_pick").value == tid
    at.slider(key="rev_min_iou").set_value(0.7).run()  # IoU 0.75 is close enough
    assert any("No trace has disagreeing annotators" in s.value for s in at.success)


def test_roles_shown_and_set_from_cli(app_env, tmp_path):
    from typer.testing import CliRunner

    from app.cli import app as cli

    res = CliRunner().invoke(cli, ["annotators", "set-role", "rita", "reviewer", "--db", app_env.url])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["annotators", "set-role", "rita", "admin", "--db", app_env.url])
    assert res.exit_code != 0 and "role must be" in res.output
    assert "rita\treviewer" in CliRunner().invoke(cli, ["annotators", "list", "--db", app_env.url]).output
    at = open_review("rita")
    assert any(c.value == "role: reviewer" for c in at.sidebar.caption)
    at = open_review("newcomer")
    assert any(c.value == "role: annotator" for c in at.sidebar.caption)
    assert app_env.get_annotator("newcomer").role == "annotator"


OIDC = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s3cret",
        "client_id": "v1studio", "client_secret": "x", "server_metadata_url": "https://idp.invalid/.well-known"}


def test_oidc_login_when_configured(synthetic_trace, app_env):
    at = app_test()
    at.secrets["auth"] = OIDC
    at.secrets["v1studio"] = {"reviewers": ["Rita@Lab.org"]}
    at.switch_page("pages/annotate.py")
    at.run()
    no_exceptions(at)
    # not logged in: a login button, no free-text name, nothing to annotate with
    assert at.sidebar.button(key="login") is not None
    assert not [t for t in at.sidebar.text_input if t.key == "annotator"]
    assert any("Type your name" in i.value or "Log in" in i.value for i in at.info)
    at.user = {"is_logged_in": True, "email": "rita@lab.org", "name": "Rita"}
    at.run()
    no_exceptions(at)
    assert at.session_state["annotator"] == "rita@lab.org"
    assert any(m.value.startswith("Signed in as **rita") for m in at.sidebar.markdown)
    assert any(c.value == "role: reviewer" for c in at.sidebar.caption)  # listed in [v1studio] reviewers
    at.radio(key="verdict").set_value("correct")
    at.button(key="save_annotation").click().run()
    no_exceptions(at)
    assert app_env.get_annotation(synthetic_trace.trace_id).annotation.annotator == "rita@lab.org"
