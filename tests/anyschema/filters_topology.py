"""The any-schema split by row filters, for tests only.

`all` takes every post and doc and owns their rows and columns (a filtered route can only be a read copy:
topology refuses a row owner with a filter).  The others are filtered read copies: `live` takes the posts
that are not deleted (a NULL status is not kept, as in PostgreSQL's row filters); `even` and `odd` split the
posts between them by author; `marked` takes the posts whose body has an x (a filter on the column an update
leaves unchanged when it is TOASTed); `pages` takes the published docs, whose table has REPLICA IDENTITY FULL.
`live`'s filter and `even`'s author expression carry `%`, psycopg's placeholder sign, which must reach the
server as written.
"""

from __future__ import annotations

from splitter.topology.model import Ownership, Service, Table, Topology

POSTS = {"id": "id", "status": "status", "author": "author", "body": "body"}
DOCS = {"id": "id", "published": "published", "body": "body"}

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
        Service("all", database="all_db", tables=(
            Table("posts", source="posts", key=("id",), columns=POSTS),
            Table("docs", source="docs", key=("id",), columns=DOCS),
        )),
        Service("live", database="live_db", tables=(
            Table("posts", source="posts", key=("id",), columns=POSTS, where="status NOT LIKE 'del%'"),
        )),
        Service("even", database="even_db", tables=(
            Table("posts", source="posts", key=("id",), columns={**POSTS, "author": "author % 1000000"},
                  where="author % 2 = 0"),
        )),
        Service("odd", database="odd_db", tables=(
            Table("posts", source="posts", key=("id",), columns=POSTS, where="author % 2 = 1"),
        )),
        Service("marked", database="marked_db", tables=(
            Table("posts", source="posts", key=("id",), columns=POSTS, where="body LIKE '%x%'"),
        )),
        Service("pages", database="pages_db", tables=(
            Table("docs", source="docs", key=("id",), columns=DOCS, where="published"),
        )),
    ),
    shared=(Ownership("posts", rows="all", columns={"all": ("status", "author", "body")}),
            Ownership("docs", rows="all", columns={"all": ("published", "body")})),
)
