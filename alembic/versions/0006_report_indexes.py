"""indexes that serve the source report

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# The columns the source, day and hour reports read besides the index keys.
REPORT_COLUMNS = ['source_id', 'caller_number', 'first_time_caller', 'outcome', 'wait_seconds', 'talk_seconds']


def upgrade() -> None:
    # NOTE: CREATE INDEX blocks writes to calls while it builds. Both indexes took 5 s on a million
    # calls from bench/reports_bench.py, on a loaded 2-core machine.
    # SQLite has no INCLUDE, so there the (company_id, started_at) index stays as it is.
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_calls_company_id_started_at', table_name='calls')
        op.create_index(
            'ix_calls_company_id_started_at', 'calls', ['company_id', 'started_at'],
            unique=False, postgresql_include=REPORT_COLUMNS,
        )
    op.create_index(
        'ix_calls_company_id_source_id_caller_number_started_at', 'calls',
        ['company_id', 'source_id', 'caller_number', 'started_at'], unique=False,
    )


def downgrade() -> None:
    op.drop_index('ix_calls_company_id_source_id_caller_number_started_at', table_name='calls')
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_calls_company_id_started_at', table_name='calls')
        op.create_index('ix_calls_company_id_started_at', 'calls', ['company_id', 'started_at'], unique=False)
