"""REST routes, one module per resource; each exposes ``router`` (an APIRouter)."""

# The largest integer a query parameter that reaches the database may take (SQLite's and PostgreSQL's
# signed 64-bit INTEGER/BIGINT); a larger one is a 422, not a failed query.
DB_INT_MAX = 2**63 - 1
