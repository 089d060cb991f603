"""replies: replies to mentions that ask for a face; channel_states.mentions_since_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 02:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('replies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('notification_id', sa.String(length=64), nullable=False),
    sa.Column('mention_id', sa.String(length=64), nullable=False),
    sa.Column('account_uri', sa.Text(), nullable=False),
    sa.Column('account_acct', sa.Text(), nullable=False),
    sa.Column('counter', sa.Integer(), nullable=False),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('image_path', sa.Text(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=False),
    sa.Column('phash', sa.String(length=16), nullable=False),
    sa.Column('caption', sa.Text(), nullable=False),
    sa.Column('alt_text', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('remote_id', sa.Text(), nullable=True),
    sa.Column('remote_url', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('image_size', sa.String(length=16), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('maybe_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('media_id', sa.Text(), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'posted', 'failed')", name=op.f('ck_replies_state')),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], name=op.f('fk_replies_checkpoint_id_checkpoints')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replies')),
    sa.UniqueConstraint('channel', 'notification_id', name=op.f('uq_replies_channel_notification_id')),
    sa.UniqueConstraint('checkpoint_id', 'seed', name=op.f('uq_replies_checkpoint_id_seed')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_replies_idempotency_key'))
    )
    with op.batch_alter_table('channel_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mentions_since_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('channel_states', schema=None) as batch_op:
        batch_op.drop_column('mentions_since_id')

    op.drop_table('replies')