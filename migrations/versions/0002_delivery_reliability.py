"""delivery reliability: maybe-sent marker, reused media, failing since; channel states

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 01:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('channel_states',
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pause_reason', sa.Text(), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('warned_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('channel', name=op.f('pk_channel_states'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('maybe_sent_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('media_id', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True))
    # An unfinished delivery that was tried may have reached the server: its next attempt
    # looks first.
    op.execute("UPDATE deliveries SET maybe_sent_at = updated_at "
               "WHERE state != 'posted' AND attempts > 0")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('failing_since')
        batch_op.drop_column('media_id')
        batch_op.drop_column('maybe_sent_at')
    op.drop_table('channel_states')
