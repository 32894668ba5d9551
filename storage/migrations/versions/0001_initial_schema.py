"""initial schema: images, models, traces (+ step chunks, tags, revisits), annotators, versioned annotations

Revision ID: 0001
Revises:
Create Date: 2026-11-28 11:17:41.816134
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('annotators',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotators')),
    sa.UniqueConstraint('name', name=op.f('uq_annotators_name'))
    )
    op.create_table('images',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('n_bytes', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_images'))
    )
    op.create_table('models',
    sa.Column('model_id', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('model_id', name=op.f('pk_models'))
    )
    op.create_table('traces',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.String(length=300), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('image_w', sa.Integer(), nullable=False),
    sa.Column('image_h', sa.Integer(), nullable=False),
    sa.Column('resized_w', sa.Integer(), nullable=False),
    sa.Column('resized_h', sa.Integer(), nullable=False),
    sa.Column('grid_rows', sa.Integer(), nullable=False),
    sa.Column('grid_cols', sa.Integer(), nullable=False),
    sa.Column('system_prompt', sa.Text(), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('output_text', sa.Text(), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.String(length=64), nullable=True),
    sa.Column('branch_step', sa.Integer(), nullable=True),
    sa.Column('branch_edit', sa.JSON(), nullable=True),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('item_key', sa.String(length=64), nullable=True),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('n_steps', sa.Integer(), nullable=False),
    sa.Column('n_revisits', sa.Integer(), nullable=False),
    sa.Column('has_pointers', sa.Boolean(), nullable=False),
    sa.Column('steps_per_chunk', sa.Integer(), nullable=False),
    sa.Column('ann_version', sa.Integer(), nullable=False),
    sa.Column('ann_seq', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=True),
    sa.Column('annotator', sa.String(length=100), nullable=True),
    sa.Column('has_corrections', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.String(length=40), nullable=True),
    sa.Column('deleted_by', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.model_id'], name=op.f('fk_traces_model_id_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_traces'))
    )
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_traces_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_image_sha256'), ['image_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_item_key'), ['item_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_verdict'), ['verdict'], unique=False)

    op.create_table('annotations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('trace_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=True),
    sa.Column('answer_correct', sa.Boolean(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('based_on', sa.Integer(), nullable=True),
    sa.Column('conflict', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_annotations_annotator_id_annotators')),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_annotations_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotations')),
    sa.UniqueConstraint('trace_id', 'version', name=op.f('uq_annotations_trace_id_version'))
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index('ix_annotations_annotator_id_trace_id', ['annotator_id', 'trace_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_annotations_trace_id'), ['trace_id'], unique=False)

    op.create_table('revisits',
    sa.Column('trace_id', sa.String(length=64), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('start_step', sa.Integer(), nullable=False),
    sa.Column('end_step', sa.Integer(), nullable=False),
    sa.Column('char_start', sa.Integer(), nullable=False),
    sa.Column('patches', sa.JSON(), nullable=False),
    sa.Column('boxes', sa.JSON(), nullable=False),
    sa.Column('query', sa.Text(), nullable=True),
    sa.Column('object_name', sa.String(length=100), nullable=True),
    sa.Column('normalized_box', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_revisits_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'idx', name=op.f('pk_revisits'))
    )
    op.create_table('trace_chunks',
    sa.Column('trace_id', sa.String(length=64), nullable=False),
    sa.Column('chunk', sa.Integer(), nullable=False),
    sa.Column('first_step', sa.Integer(), nullable=False),
    sa.Column('n_steps', sa.Integer(), nullable=False),
    sa.Column('steps_json', sa.Text(), nullable=False),
    sa.Column('pointers', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_trace_chunks_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'chunk', name=op.f('pk_trace_chunks'))
    )
    op.create_table('trace_tags',
    sa.Column('trace_id', sa.String(length=64), nullable=False),
    sa.Column('tag', sa.String(length=100), nullable=False),
    sa.Column('from_annotation', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_trace_tags_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'tag', 'from_annotation', name=op.f('pk_trace_tags'))
    )
    with op.batch_alter_table('trace_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trace_tags_tag'), ['tag'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('trace_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trace_tags_tag'))

    op.drop_table('trace_tags')
    op.drop_table('trace_chunks')
    op.drop_table('revisits')
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotations_trace_id'))
        batch_op.drop_index('ix_annotations_annotator_id_trace_id')

    op.drop_table('annotations')
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_traces_verdict'))
        batch_op.drop_index(batch_op.f('ix_traces_status'))
        batch_op.drop_index(batch_op.f('ix_traces_parent_id'))
        batch_op.drop_index(batch_op.f('ix_traces_model_id'))
        batch_op.drop_index(batch_op.f('ix_traces_item_key'))
        batch_op.drop_index(batch_op.f('ix_traces_image_sha256'))
        batch_op.drop_index(batch_op.f('ix_traces_created_at'))

    op.drop_table('traces')
    op.drop_table('models')
    op.drop_table('images')
    op.drop_table('annotators')

