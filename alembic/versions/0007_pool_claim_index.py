"""index that serves pool number claims, and NOT NULL held_until

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

from models.base import UTCDateTime


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

NEVER_HELD = datetime(1970, 1, 1, tzinfo=timezone.utc)


def upgrade() -> None:
    # A row inserted outside the models may have no hold end. It was never leased, so it gets the
    # epoch like every new number, and NOT NULL keeps the claim's "free" test a plain range.
    numbers = sa.table('tracking_numbers', sa.column('held_until', UTCDateTime()))
    op.execute(numbers.update().where(numbers.c.held_until.is_(None)).values(held_until=NEVER_HELD))
    # The claim filters on pool and state and takes the lowest (held_until, id). With all four
    # columns in one index, PostgreSQL and SQLite read the first entry instead of sorting the pool.
    op.drop_index('ix_tracking_numbers_pool_id_held_until', table_name='tracking_numbers')
    # NOTE: on SQLite the batch copies tracking_numbers into a new table, and on PostgreSQL
    # SET NOT NULL scans it, so both block writes to the numbers while they run.
    with op.batch_alter_table('tracking_numbers', schema=None) as batch_op:
        batch_op.alter_column(
            'held_until', existing_type=sa.DateTime(timezone=True), nullable=False
        )
    op.create_index(
        'ix_tracking_numbers_pool_id_state_held_until_id', 'tracking_numbers',
        ['pool_id', 'state', 'held_until', 'id'], unique=False,
    )


def downgrade() -> None:
    op.drop_index('ix_tracking_numbers_pool_id_state_held_until_id', table_name='tracking_numbers')
    with op.batch_alter_table('tracking_numbers', schema=None) as batch_op:
        batch_op.alter_column('held_until', existing_type=sa.DateTime(timezone=True), nullable=True)
    op.create_index(
        'ix_tracking_numbers_pool_id_held_until', 'tracking_numbers',
        ['pool_id', 'held_until'], unique=False,
    )
