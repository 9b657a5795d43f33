"""hold state of pool numbers for race-free leasing

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

from models.base import UTCDateTime


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain added columns and an index: no table copy is needed on SQLite.
    op.add_column('tracking_numbers', sa.Column('held_by_session_id', sa.Integer(), nullable=True))
    op.add_column('tracking_numbers', sa.Column('held_until', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_tracking_numbers_held_by_session_id'), 'tracking_numbers', ['held_by_session_id'], unique=False)
    op.create_index(op.f('ix_tracking_numbers_pool_id_held_until'), 'tracking_numbers', ['pool_id', 'held_until'], unique=False)
    # Existing numbers were never leased: they are free since the epoch, as new ones are.
    numbers = sa.table('tracking_numbers', sa.column('held_until', UTCDateTime()))
    op.execute(numbers.update().values(held_until=datetime(1970, 1, 1, tzinfo=timezone.utc)))


def downgrade() -> None:
    op.drop_index(op.f('ix_tracking_numbers_pool_id_held_until'), table_name='tracking_numbers')
    op.drop_index(op.f('ix_tracking_numbers_held_by_session_id'), table_name='tracking_numbers')
    with op.batch_alter_table('tracking_numbers', schema=None) as batch_op:
        batch_op.drop_column('held_until')
        batch_op.drop_column('held_by_session_id')
