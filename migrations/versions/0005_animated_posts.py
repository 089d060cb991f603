"""posts.kind, seeds, frames, fps: animated posts (a looping walk between seeds)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:15:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='image', nullable=False))
        batch_op.add_column(sa.Column('seeds', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('frames', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('fps', sa.Float(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.drop_column('fps')
        batch_op.drop_column('frames')
        batch_op.drop_column('seeds')
        batch_op.drop_column('kind')
