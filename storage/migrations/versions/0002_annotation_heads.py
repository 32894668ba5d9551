"""independent heads: each annotator's own head per trace, a reviewers' consensus head, resolved export head

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 08:00:00

Adds `annotation_heads` (trace, annotator → version), `annotations.kind` ('label' / 'consensus') and
`annotations.adopted_from`, and on `traces` the number of annotators, the consensus version and the head state.
Every existing version is kept as it is (numbers, content, conflict flags); the backfill only adds:

- a version tagged `adjudicated` (how the Review page used to record a ruling) becomes kind 'consensus'; the
  newest of them is the trace's consensus head when it was the trace's current annotation (nobody relabelled
  after the ruling);
- each other annotator's head is their newest label version, conflict saves included (one shared head
  used to flag every independent second save as a conflict);
- the denormalised export head (`ann_version`, `verdict`, `annotator`, `has_corrections`), the annotation
  tags and `ann_state` are recomputed with `storage.annotations.resolve_export_head`, the rule the store
  applies on every save.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('annotations', sa.Column('kind', sa.String(length=16), nullable=False, server_default='label'))
    op.add_column('annotations', sa.Column('adopted_from', sa.Integer(), nullable=True))
    op.add_column('traces', sa.Column('n_annotators', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('traces', sa.Column('consensus_version', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('traces', sa.Column('ann_state', sa.String(length=16), nullable=False, server_default='none'))
    op.create_index(op.f('ix_traces_n_annotators'), 'traces', ['n_annotators'], unique=False)
    op.create_table('annotation_heads',
    sa.Column('trace_id', sa.String(length=64), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_annotation_heads_annotator_id_annotators')),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_annotation_heads_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'annotator_id', name=op.f('pk_annotation_heads'))
    )
    op.create_index(op.f('ix_annotation_heads_annotator_id'), 'annotation_heads', ['annotator_id'], unique=False)
    # Only native ALTER TABLE ADD COLUMN / CREATE INDEX above: a batch *recreate* of `traces` on SQLite would
    # drop the old table, and with foreign keys on that deletes every annotation (ON DELETE CASCADE).
    _backfill(op.get_bind())


def _backfill(conn: sa.engine.Connection) -> None:
    from storage.annotations import Annotation, AnnotationRecord, resolve_export_head

    ann = sa.table('annotations', sa.column('id', sa.Integer), sa.column('trace_id', sa.String),
                   sa.column('version', sa.Integer), sa.column('annotator_id', sa.Integer),
                   sa.column('created_at', sa.String), sa.column('verdict', sa.String),
                   sa.column('answer_correct', sa.Boolean), sa.column('note', sa.Text),
                   sa.column('payload', sa.JSON), sa.column('conflict', sa.Boolean), sa.column('kind', sa.String))
    names = dict(conn.execute(sa.text('SELECT id, name FROM annotators')).all())
    traces = sa.table('traces', sa.column('id', sa.String), sa.column('ann_version', sa.Integer),
                      sa.column('verdict', sa.String), sa.column('annotator', sa.String),
                      sa.column('has_corrections', sa.Boolean), sa.column('n_annotators', sa.Integer),
                      sa.column('consensus_version', sa.Integer), sa.column('ann_state', sa.String))
    heads_t = sa.table('annotation_heads', sa.column('trace_id', sa.String), sa.column('annotator_id', sa.Integer),
                       sa.column('version', sa.Integer), sa.column('updated_at', sa.String))
    tags_t = sa.table('trace_tags', sa.column('trace_id', sa.String), sa.column('tag', sa.String),
                      sa.column('from_annotation', sa.Boolean))
    current = dict(conn.execute(sa.select(traces.c.id, traces.c.ann_version)).all())
    by_trace: dict[str, list] = {}
    for r in conn.execute(sa.select(ann).order_by(ann.c.trace_id, ann.c.version)):
        by_trace.setdefault(r.trace_id, []).append(r)
    for tid, rows in by_trace.items():
        heads: dict[int, AnnotationRecord] = {}
        consensus: AnnotationRecord | None = None
        for r in rows:
            a = Annotation.from_dict({"annotator": names.get(r.annotator_id, "?"), "verdict": r.verdict,
                                      "answer_correct": r.answer_correct, "note": r.note, **(r.payload or {})})
            adjudicated = "adjudicated" in (a.tags or [])
            rec = AnnotationRecord(trace_id=tid, version=r.version, created_at=r.created_at, annotation=a,
                                   conflict=bool(r.conflict), kind="consensus" if adjudicated else "label")
            if adjudicated:
                conn.execute(sa.update(ann).where(ann.c.id == r.id).values(kind='consensus'))
                if not r.conflict:
                    consensus = rec if r.version == current.get(tid) else None
            else:
                heads[r.annotator_id] = rec
                if consensus is not None and not r.conflict:
                    consensus = None  # someone relabelled after the ruling: it was no longer current
        if heads:
            conn.execute(sa.insert(heads_t), [dict(trace_id=tid, annotator_id=aid, version=rec.version,
                                                   updated_at=rec.created_at) for aid, rec in heads.items()])
        by_name = {rec.annotation.annotator: rec for rec in heads.values()}
        state, chosen = resolve_export_head(by_name, consensus)
        a = chosen.annotation if chosen is not None else None
        conn.execute(sa.update(traces).where(traces.c.id == tid).values(
            ann_version=chosen.version if chosen else 0, verdict=a.verdict if a else None,
            annotator=a.annotator if a else None, has_corrections=bool(a and a.has_corrections),
            n_annotators=len(heads), consensus_version=consensus.version if consensus else 0, ann_state=state))
        conn.execute(sa.delete(tags_t).where(tags_t.c.trace_id == tid, tags_t.c.from_annotation.is_(True)))
        tags = sorted({t for rec in [*heads.values(), *([consensus] if consensus else [])]
                       for t in rec.annotation.tags})
        if tags:
            conn.execute(sa.insert(tags_t), [dict(trace_id=tid, tag=t, from_annotation=True) for t in tags])


def downgrade() -> None:
    # Every version stays in `annotations`; only the per-annotator heads and the consensus markers go. The
    # single current annotation becomes each trace's newest non-conflict version, as revision 0001 had it.
    conn = op.get_bind()
    conn.execute(sa.text(
        "UPDATE traces SET ann_version = COALESCE((SELECT MAX(a.version) FROM annotations a "
        "WHERE a.trace_id = traces.id AND a.conflict = :f), 0)"), {"f": False})
    op.drop_index(op.f('ix_annotation_heads_annotator_id'), table_name='annotation_heads')
    op.drop_table('annotation_heads')
    # native DROP COLUMN (SQLite ≥ 3.35), never a table recreate: see upgrade()
    op.drop_index(op.f('ix_traces_n_annotators'), table_name='traces')
    for table, column in (('traces', 'ann_state'), ('traces', 'consensus_version'), ('traces', 'n_annotators'),
                          ('annotations', 'adopted_from'), ('annotations', 'kind')):
        op.execute(sa.text(f'ALTER TABLE {table} DROP COLUMN {column}'))
