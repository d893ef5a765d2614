#!/usr/bin/env bash
# Creates the source database bento_social and the seven service databases, loads the schemas
# splitter ships (devtools/sql/bento_social.sql, devtools/sql/targets/<database>.sql), and creates
# splitter's own role with exactly the privileges it needs (deploy/postgres/splitter-role.sql, with
# the password in $SPLITTER_DB_PASSWORD): splitter never runs as the superuser.
#
# Run by the postgres image on first start (mounted into /docker-entrypoint-initdb.d), where psql
# reaches the server over its socket as $POSTGRES_USER.  Safe to run again by hand: a database that
# exists is kept, a schema already loaded is not loaded twice.  It never writes rows (the source
# gets its data from the application, or from `splitter demo` locally) and creates none of splitter's
# own state but the empty `splitter` schema the role owns (splitter creates its tables there).
set -euo pipefail

SQL_DIR="${SPLITTER_SQL_DIR:-/splitter-sql}"
ROLE_SCRIPT="${SPLITTER_ROLE_SCRIPT:-/splitter-deploy/splitter-role.sql}"
: "${SPLITTER_DB_PASSWORD:?set SPLITTER_DB_PASSWORD, the password of the splitter database role}"
SOURCE_DB=bento_social
SERVICE_DBS=(auth_db user_db post_db topic_db comment_db notification_db interaction_db)

run_psql() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" "$@"
}

for db in "$SOURCE_DB" "${SERVICE_DBS[@]}"; do
    if [ "$(run_psql --dbname postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]; then
        run_psql --dbname postgres -c "CREATE DATABASE \"$db\""
        echo "splitter: created database $db"
    fi
done

# The source: loaded once (its users table is the marker).
if [ "$(run_psql --dbname "$SOURCE_DB" -tAc "SELECT to_regclass('public.users') IS NOT NULL")" != "t" ]; then
    run_psql --dbname "$SOURCE_DB" --single-transaction -f "$SQL_DIR/bento_social.sql"
    echo "splitter: loaded the bento_social schema"
fi

# Each service database: loaded once (any schema besides public and the system ones is the marker).
for db in "${SERVICE_DBS[@]}"; do
    loaded=$(run_psql --dbname "$db" -tAc "SELECT count(*) FROM pg_namespace WHERE nspname <> 'public'
        AND nspname <> 'information_schema' AND nspname NOT LIKE 'pg\_%' AND nspname <> 'splitter'")
    if [ "$loaded" = "0" ]; then
        run_psql --dbname "$db" --single-transaction -f "$SQL_DIR/targets/$db.sql"
        echo "splitter: loaded the $db schema"
    fi
done

# splitter's role and its grants, after the schemas (it grants on their tables).  The script is
# idempotent and reads the password from SPLITTER_DB_PASSWORD itself (no command line shows it).
run_psql --dbname postgres -f "$ROLE_SCRIPT"
echo "splitter: granted splitter's role what it needs"
