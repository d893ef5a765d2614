-- Tables of the any-schema transaction tests: a ledger, and 100 small tables one transaction writes together.
CREATE TABLE ledger (id bigint PRIMARY KEY, what text NOT NULL, amount numeric NOT NULL);
DO $$ BEGIN
    FOR i IN 1..100 LOOP
        EXECUTE format('CREATE TABLE %I (id integer PRIMARY KEY, v text)', format('part_%s', lpad(i::text, 3, '0')));
    END LOOP;
END $$;
