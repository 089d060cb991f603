"""deliveries.image_size: the size of the image as delivered (bot.image.scale)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_size', sa.String(length=16), nullable=True))
    # Everything delivered before was the stored image itself.
    op.execute("UPDATE deliveries SET image_size = '64x64' WHERE state = 'posted'")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('image_size')
