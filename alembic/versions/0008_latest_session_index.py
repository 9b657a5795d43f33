"""id in the index that finds a visitor's latest session

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A session start looks up the visitor's latest session by (started_at DESC, id DESC). With
    # id in the index, PostgreSQL reads one entry instead of sorting all the visitor's sessions;
    # SQLite's indexes hold the rowid already, so it gains nothing and loses nothing.
    op.create_index(
        'ix_visitor_sessions_site_id_visitor_id_started_at_id', 'visitor_sessions',
        ['site_id', 'visitor_id', 'started_at', 'id'], unique=False,
    )
    op.drop_index('ix_visitor_sessions_site_id_visitor_id_started_at', table_name='visitor_sessions')


def downgrade() -> None:
    op.create_index(
        'ix_visitor_sessions_site_id_visitor_id_started_at', 'visitor_sessions',
        ['site_id', 'visitor_id', 'started_at'], unique=False,
    )
    op.drop_index('ix_visitor_sessions_site_id_visitor_id_started_at_id', table_name='visitor_sessions')
