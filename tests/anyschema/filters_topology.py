"""The any-schema split by row filters, for tests only.

`live` takes the posts that are not deleted (a NULL status is not kept, as in PostgreSQL's row filters);
its filter and `even`'s author expression carry `%`, psycopg's placeholder sign, which must reach the
server as written;
`even` and `odd` split posts between them by author; `pages` takes the published docs, whose table has
REPLICA IDENTITY FULL.  `live` owns posts' rows and columns; `even` and `odd` keep read copies.
"""

from __future__ import annotations

from splitter.topology.model import Ownership, Service, Table, Topology

POSTS = {"id": "id", "status": "status", "author": "author", "body": "body"}

TOPOLOGY = Topology(
    source_database="anyschema",
    services=(
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
        Service("pages", database="pages_db", tables=(
            Table("docs", source="docs", key=("id",), columns={"id": "id", "published": "published", "body": "body"},
                  where="published"),
        )),
    ),
    shared=(Ownership("posts", rows="live", columns={"live": ("status", "author", "body")}),),
)
