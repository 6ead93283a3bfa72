CREATE SCHEMA harness_capture;
REVOKE ALL ON SCHEMA harness_capture FROM PUBLIC;

-- One number per captured statement, not per row: a per-row serial and its index cost
-- more than the images themselves on bulk writes. Within a statement a row appears at
-- most once removed and once added, removals first (op '-' sorts after '+').
CREATE SEQUENCE harness_capture.statement_number;
CREATE TABLE harness_capture.changes (
    id bigint NOT NULL,          -- the statement's number, in the order statements ran
    relid oid NOT NULL,          -- the table the user thinks in: a partition's root
    via oid,                     -- the partition the statement named, when it named one
    op "char" NOT NULL,          -- '-': a row image removed, '+': a row image added
    image json NOT NULL
);

-- Typed logs: one per table a user thinks in (a plain table or a partitioned root), its
-- row images copied as they are rather than turned into JSON, which is most of what a
-- bulk write pays for capture. JSON is made when the log is read. Columns of built-in types
-- are copied; a column of a type of the user's (enum, domain, composite, an extension's)
-- or naming objects (reg*) is turned into JSON at once, so that no log depends on the
-- user's objects and every image reads as it read when it was taken. A log holds one shape:
-- when its table's columns change, or the table goes or joins a partition tree, the heal
-- hook first moves its rows into `changes` as JSON, under the same statement numbers (and
-- under the partition tree's root), then makes a log of the new shape. `changes` holds
-- those rows and the ones written row by row (TRUNCATE, inheritance trees, tables without
-- columns). The agent may not even look into the logs' schema, so nothing of its own can
-- come to depend on a log.
CREATE SCHEMA harness_capture_log;
REVOKE ALL ON SCHEMA harness_capture_log FROM PUBLIC;
CREATE TABLE harness_capture.logs (root oid PRIMARY KEY, signature text NOT NULL);
-- How a statement on a table (a root or one of its partitions) writes into its root's
-- log, for the shapes both had when it was made.
CREATE TABLE harness_capture.writers (relid oid PRIMARY KEY, root oid NOT NULL,
                                      signature text NOT NULL, inserted text NOT NULL,
                                      updated text NOT NULL, deleted text NOT NULL);
-- The last name of every table the capture watches, so that a table renamed or dropped
-- since its rows were captured is still named.
-- and the name it had when first watched: a policy on `orders` still covers it renamed.
CREATE TABLE harness_capture.relations (relid oid PRIMARY KEY, name text NOT NULL,
                                        first_name text NOT NULL);
-- Columns whose values masking replaced when the baseline was built, by number: a table
-- or column renamed since is still known as masked.
CREATE TABLE harness_capture.masked (relid oid NOT NULL, attnum int2 NOT NULL,
                                     PRIMARY KEY (relid, attnum));
-- The recursion guard of the DDL hooks is a setting; its value is a secret the agent
-- cannot read, so the agent cannot set it to switch the hooks off.
CREATE TABLE harness_capture.secret (token text NOT NULL);
INSERT INTO harness_capture.secret
SELECT md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text);
CREATE FUNCTION harness_capture.busy() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT current_setting('harness_capture.busy', true) = token FROM harness_capture.secret
$f$;
CREATE TABLE harness_capture.ddl (
    id bigserial PRIMARY KEY,
    command_tag text NOT NULL,
    object_type text,
    object_identity text,
    query text
);

-- A statement-level trigger fires only on the table its statement names: a write that
-- names a partition fires the partition's, one that names the partitioned root fires the
-- root's (its transition tables then hold the rows of every partition). Either way the
-- rows are recorded once, under the root. A trigger's plan is made per trigger and only
-- for the branch it runs, so an INSERT trigger never looks for old_rows.
CREATE FUNCTION harness_capture.on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp @READABLE@ AS $f$
DECLARE
    stmt bigint := nextval('harness_capture.statement_number');
    writer record;
    root oid;
    named oid;
BEGIN
    SELECT w.root, CASE TG_OP WHEN 'INSERT' THEN w.inserted WHEN 'UPDATE' THEN w.updated
                              ELSE w.deleted END AS statement
    INTO writer FROM harness_capture.writers w WHERE w.relid = TG_RELID;
    IF FOUND THEN
        named := nullif(TG_RELID, writer.root);
        -- Read committed: the writer was read with a snapshot taken now, and the table's
        -- columns cannot change while this statement holds it, so the writer is current.
        IF current_setting('transaction_isolation') = 'read committed' THEN
            EXECUTE writer.statement USING stmt, named;
            RETURN NULL;
        END IF;
        -- An older snapshot may see a writer made before another session changed the
        -- columns: it fails (see make_writer), and the images go the JSON way below.
        BEGIN
            EXECUTE writer.statement USING stmt, named;
            RETURN NULL;
        EXCEPTION WHEN datatype_mismatch OR undefined_column OR undefined_object
                       OR undefined_table OR cannot_coerce THEN
            NULL;
        END;
    END IF;
    root := coalesce(pg_partition_root(TG_RELID), TG_RELID);
    named := nullif(TG_RELID, root);
    -- ROW(x.*)::the table's type: a column named like the alias cannot stand in for the row.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        EXECUTE format('INSERT INTO harness_capture.changes (id, relid, via, op, image) '
                       'SELECT $1, $2, $3, ''-'', row_to_json(ROW(o.*)::%s) FROM old_rows o',
                       TG_RELID::regclass) USING stmt, root, named;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE format('INSERT INTO harness_capture.changes (id, relid, via, op, image) '
                       'SELECT $1, $2, $3, ''+'', row_to_json(ROW(n.*)::%s) FROM new_rows n',
                       TG_RELID::regclass) USING stmt, root, named;
    END IF;
    RETURN NULL;
END $f$;

-- Tables of an inheritance tree (not partitions): a statement through the parent lists
-- the children's rows in the parent's transition tables, converted to the parent's
-- columns and without saying which table holds them. Row-level triggers fire on the
-- table that holds each row, so these tables are captured row by row.
CREATE FUNCTION harness_capture.on_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp @READABLE@ AS $f$
DECLARE
    stmt bigint := nextval('harness_capture.statement_number');
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO harness_capture.changes (id, relid, op, image)
        VALUES (stmt, TG_RELID, '-', row_to_json(OLD));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO harness_capture.changes (id, relid, op, image)
        VALUES (stmt, TG_RELID, '+', row_to_json(NEW));
    END IF;
    RETURN NULL;
END $f$;

-- TRUNCATE fires the BEFORE TRUNCATE trigger of every table it empties (a partitioned
-- root's partitions, a parent's children), so each copies only its own rows.
CREATE FUNCTION harness_capture.on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp @READABLE@ AS $f$
DECLARE
    root oid := coalesce(pg_partition_root(TG_RELID), TG_RELID);
BEGIN
    EXECUTE format(
        'INSERT INTO harness_capture.changes (id, relid, via, op, image) '
        'SELECT %s, %s, %s, ''-'', row_to_json(ROW(t.*)::%s) FROM ONLY %s t',
        nextval('harness_capture.statement_number'), root,
        coalesce(nullif(TG_RELID, root)::text, 'NULL'), TG_RELID::regclass,
        TG_RELID::regclass);
    RETURN NULL;
END $f$;

CREATE FUNCTION harness_capture.inherits(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                   WHERE (i.inhrelid = rel OR i.inhparent = rel) AND p.relkind = 'r')
$f$;

CREATE FUNCTION harness_capture.attach(rel regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF harness_capture.inherits(rel) THEN
        EXECUTE format('CREATE TRIGGER harness_capture_insert AFTER INSERT ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION harness_capture.on_row_change()', rel);
        EXECUTE format('CREATE TRIGGER harness_capture_update AFTER UPDATE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION harness_capture.on_row_change()', rel);
        EXECUTE format('CREATE TRIGGER harness_capture_delete AFTER DELETE ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION harness_capture.on_row_change()', rel);
    ELSE
        EXECUTE format('CREATE TRIGGER harness_capture_insert AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION harness_capture.on_change()', rel);
        EXECUTE format('CREATE TRIGGER harness_capture_update AFTER UPDATE ON %s '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION harness_capture.on_change()', rel);
        EXECUTE format('CREATE TRIGGER harness_capture_delete AFTER DELETE ON %s '
                       'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION harness_capture.on_change()', rel);
    END IF;
    EXECUTE format('CREATE TRIGGER harness_capture_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION harness_capture.on_truncate()', rel);
    -- ALWAYS: they fire even with session_replication_role = replica.
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER harness_capture_insert, '
                   'ENABLE ALWAYS TRIGGER harness_capture_update, '
                   'ENABLE ALWAYS TRIGGER harness_capture_delete, '
                   'ENABLE ALWAYS TRIGGER harness_capture_truncate', rel);
END $f$;

-- Each table's columns as a typed log copies them: names, types, type modifiers and
-- generation.
CREATE VIEW harness_capture.shapes AS
    SELECT a.attrelid AS relid,
           string_agg(format('%s %s %s %s', quote_ident(a.attname), a.atttypid, a.atttypmod,
                             a.attgenerated), ', ' ORDER BY a.attnum) AS signature
    FROM pg_catalog.pg_attribute a
    WHERE a.attnum > 0 AND NOT a.attisdropped
    GROUP BY a.attrelid;

CREATE FUNCTION harness_capture.copied(type oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT type < 16384 AND NOT EXISTS (SELECT 1 FROM pg_type t
                                        WHERE t.oid = type AND t.typname ~ '^_?reg')
$f$;

CREATE FUNCTION harness_capture.make_log(root oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    columns text;
BEGIN
    SELECT string_agg(format('%I %s', a.attname,
                             CASE WHEN harness_capture.copied(a.atttypid)
                                  THEN format_type(a.atttypid, a.atttypmod) ELSE 'json' END),
                      ', ' ORDER BY a.attname COLLATE "C")
    INTO columns FROM pg_attribute a
    WHERE a.attrelid = root AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> 'v';
    IF columns IS NULL THEN
        RETURN;  -- a table without columns: its rows go to `changes`
    END IF;
    EXECUTE format('CREATE TYPE harness_capture_log.%I AS (%s)', 'shape_' || root, columns);
    EXECUTE format('CREATE TABLE harness_capture_log.%I (statement bigint NOT NULL, via oid, '
                   'op "char" NOT NULL, image harness_capture_log.%I)',
                   'log_' || root, 'shape_' || root);
    INSERT INTO harness_capture.logs
    SELECT root, s.signature FROM harness_capture.shapes s WHERE s.relid = root;
END $f$;

-- The root's columns in name order, read by name from the rows of the table the statement
-- named (a partition may order its columns differently). In name order, a writer made
-- before another session changed the table's columns (seen by a transaction whose snapshot
-- is older) either names the same columns in the same places or fails: then the row images
-- are written as JSON instead. Virtual generated columns (PostgreSQL 18) are not stored,
-- so not copied: an image holds what the row stores.
CREATE FUNCTION harness_capture.make_writer(rel oid, root oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    image text;
    statement text;
    removed text;
    added text;
BEGIN
    SELECT string_agg(CASE WHEN harness_capture.copied(a.atttypid) THEN format('o.%I', a.attname)
                           ELSE format('to_json(o.%I)', a.attname) END,
                      ', ' ORDER BY a.attname COLLATE "C")
    INTO image FROM pg_attribute a
    WHERE a.attrelid = root AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> 'v';
    statement := format('INSERT INTO harness_capture_log.%I (statement, via, op, image) '
                        'SELECT $1, $2, @OP@, ROW(%s)::harness_capture_log.%I FROM @ROWS@ o',
                        'log_' || root, image, 'shape_' || root);
    removed := replace(replace(statement, '@OP@', quote_literal('-')), '@ROWS@', 'old_rows');
    added := replace(replace(statement, '@OP@', quote_literal('+')), '@ROWS@', 'new_rows');
    INSERT INTO harness_capture.writers
    SELECT rel, root, own.signature || ' / ' || logged.signature, added,
           format('WITH removed AS (%s) %s', removed, added), removed
    FROM harness_capture.shapes own, harness_capture.shapes logged
    WHERE own.relid = rel AND logged.relid = root;
END $f$;

-- A log's rows into `changes` as JSON, under `home` (its root, or the root of the partition
-- tree it has joined, then naming it as the partition), and the log removed.
CREATE FUNCTION harness_capture.freeze(logged oid, home oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp @READABLE@ AS $f$
BEGIN
    EXECUTE format('INSERT INTO harness_capture.changes (id, relid, via, op, image) '
                   'SELECT statement, $1, coalesce(via, nullif($2, $1)), op, '
                   'row_to_json(image) FROM harness_capture_log.%I', 'log_' || logged)
        USING home, logged;
    IF home <> logged THEN
        UPDATE harness_capture.changes SET relid = home, via = coalesce(via, logged)
        WHERE relid = logged;
    END IF;
    EXECUTE format('DROP TABLE harness_capture_log.%I', 'log_' || logged);
    EXECUTE format('DROP TYPE harness_capture_log.%I', 'shape_' || logged);
    DELETE FROM harness_capture.logs WHERE root = logged;
    DELETE FROM harness_capture.writers WHERE root = logged;
END $f$;

-- Tables of an inheritance tree (captured row by row, so without a typed log).
CREATE VIEW harness_capture.inherited AS
    SELECT i.inhrelid AS relid FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class p ON p.oid = i.inhparent WHERE p.relkind = 'r'
    UNION
    SELECT i.inhparent FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class p ON p.oid = i.inhparent WHERE p.relkind = 'r';

-- Logs and writers follow the tables: stale ones go (their rows kept), missing ones come.
-- Runs after every DDL command, so each step is one set-based query.
CREATE FUNCTION harness_capture.follow_shapes() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $f$
DECLARE
    stale record;
BEGIN
    FOR stale IN
        SELECT l.root, CASE WHEN c.relispartition THEN pg_partition_root(l.root)
                            ELSE l.root END AS home
        FROM harness_capture.logs l
        LEFT JOIN pg_class c ON c.oid = l.root
        WHERE c.oid IS NULL OR c.relispartition
           OR l.root IN (SELECT relid FROM harness_capture.inherited)
           OR (SELECT s.signature FROM harness_capture.shapes s WHERE s.relid = l.root)
              IS DISTINCT FROM l.signature
    LOOP
        PERFORM harness_capture.freeze(stale.root, stale.home);
    END LOOP;
    DELETE FROM harness_capture.writers w
    WHERE w.root NOT IN (SELECT root FROM harness_capture.logs)
       OR coalesce(pg_partition_root(w.relid), w.relid) IS DISTINCT FROM w.root
       OR (SELECT own.signature FROM harness_capture.shapes own WHERE own.relid = w.relid)
          || ' / ' || (SELECT l.signature FROM harness_capture.logs l WHERE l.root = w.root)
          IS DISTINCT FROM w.signature;
    PERFORM harness_capture.make_log(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE @TOP_LEVEL_TABLE@ AND @USER_NAMESPACE@
      AND c.oid NOT IN (SELECT relid FROM harness_capture.inherited)
      AND c.oid NOT IN (SELECT root FROM harness_capture.logs);
    PERFORM harness_capture.make_writer(c.oid, coalesce(pg_partition_root(c.oid), c.oid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE @TABLE@ AND @USER_NAMESPACE@
      AND c.oid NOT IN (SELECT relid FROM harness_capture.inherited)
      AND c.oid NOT IN (SELECT relid FROM harness_capture.writers)
      AND coalesce(pg_partition_root(c.oid), c.oid) IN (SELECT root FROM harness_capture.logs);
END $f$;

-- Rows the current transaction has written to the user's tables so far (the harness's
-- own tables and the system's left out): a DDL command that wrote rows is told apart.
CREATE FUNCTION harness_capture.writes_so_far() RETURNS numeric
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_all_tables
    WHERE schemaname NOT IN ('harness_capture', 'harness_capture_log', 'information_schema')
      AND schemaname !~ '^pg_'
$f$;

-- Each DDL command's writes so far, as its start saw them, signed with the secret (a
-- function the command runs cannot set it lower).
CREATE FUNCTION harness_capture.on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    writes text := harness_capture.writes_so_far()::text;
BEGIN
    PERFORM set_config('harness_capture.writes', writes || ':' || md5(token || writes), true)
    FROM harness_capture.secret;
END $f$;

CREATE FUNCTION harness_capture.writes_at_start() RETURNS numeric
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT CASE WHEN md5(token || split_part(mark, ':', 1)) = split_part(mark, ':', 2)
                THEN split_part(mark, ':', 1)::numeric ELSE 0 END
    FROM harness_capture.secret,
         coalesce(nullif(current_setting('harness_capture.writes', true), ''), 'Infinity:')
         AS mark
$f$;

-- The capture triggers a table must have, each exactly: name, function, kind (tgtype:
-- 1 row, 2 before, 4 insert, 8 delete, 16 update, 32 truncate), enabled ALWAYS, no
-- column list, no condition.
CREATE VIEW harness_capture.expected_triggers AS
    SELECT row_level, name, fn, type FROM (VALUES
        (false, 'harness_capture_insert', 'harness_capture.on_change()', 4),
        (false, 'harness_capture_update', 'harness_capture.on_change()', 16),
        (false, 'harness_capture_delete', 'harness_capture.on_change()', 8),
        (false, 'harness_capture_truncate', 'harness_capture.on_truncate()', 34),
        (true, 'harness_capture_insert', 'harness_capture.on_row_change()', 5),
        (true, 'harness_capture_update', 'harness_capture.on_row_change()', 17),
        (true, 'harness_capture_delete', 'harness_capture.on_row_change()', 9),
        (true, 'harness_capture_truncate', 'harness_capture.on_truncate()', 34))
        AS e(row_level, name, fn, type);

-- Every trigger that is, or poses as, a capture trigger: one running a capture function,
-- or one with a capture trigger's name.
CREATE VIEW harness_capture.capture_triggers AS
    SELECT t.tgrelid, t.tgname, t.tgfoid, t.tgtype, t.tgenabled, t.tgqual, t.tgattr
    FROM pg_catalog.pg_trigger t
    WHERE t.tgfoid IN (SELECT e.fn::regprocedure FROM harness_capture.expected_triggers e)
       OR t.tgname IN (SELECT e.name FROM harness_capture.expected_triggers e);

-- Every table (partitions included) gets the capture triggers it needs, and a table whose
-- capture triggers are not exactly those (dropped, disabled, replaced by the agent's own
-- under the same name, renamed, of the wrong kind since the table joined or left an
-- inheritance tree) gets them made again; a renamed one would capture twice, so every
-- trigger running a capture function goes first. Runs after every DDL command, as the
-- superuser; it also records each table's name.
CREATE FUNCTION harness_capture.heal() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $f$
DECLARE
    rel regclass;
    trigger name;
BEGIN
    PERFORM set_config('harness_capture.busy', token, true) FROM harness_capture.secret;
    FOR rel IN
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE @TABLE@ AND @USER_NAMESPACE@
          AND (SELECT count(*) FILTER (
                   WHERE t.tgenabled = 'A' AND t.tgqual IS NULL
                     AND cardinality(t.tgattr::int2[]) = 0
                     AND EXISTS (SELECT 1 FROM harness_capture.expected_triggers e
                                 WHERE e.name = t.tgname AND e.fn::regprocedure = t.tgfoid
                                   AND e.type = t.tgtype
                                   AND e.row_level = (c.oid IN (
                                       SELECT relid FROM harness_capture.inherited))))
                     || ' of ' || count(*)
               FROM harness_capture.capture_triggers t WHERE t.tgrelid = c.oid) <> '4 of 4'
    LOOP
        -- A table that had capture triggers: if this very command also wrote rows, they
        -- may have gone by uncaptured (a CHECK calling a function that writes, validated
        -- while the triggers were off): the command is refused, whole.
        IF EXISTS (SELECT 1 FROM harness_capture.capture_triggers t WHERE t.tgrelid = rel)
           AND harness_capture.writes_so_far() > harness_capture.writes_at_start() THEN
            RAISE EXCEPTION 'harness: one command both changed the capture triggers of % '
                            'and wrote rows, which capture could have missed; write in a '
                            'statement of its own', rel
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        FOR trigger IN
            SELECT t.tgname FROM harness_capture.capture_triggers t WHERE t.tgrelid = rel
        LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', trigger, rel);
        END LOOP;
        PERFORM harness_capture.attach(rel);
    END LOOP;
    INSERT INTO harness_capture.relations (relid, name, first_name)
    SELECT c.oid, @QUALIFIED_NAME@, @QUALIFIED_NAME@
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE @TABLE@ AND @USER_NAMESPACE@
    ON CONFLICT (relid) DO UPDATE SET name = EXCLUDED.name
        WHERE harness_capture.relations.name <> EXCLUDED.name;
    PERFORM harness_capture.follow_shapes();
    PERFORM set_config('harness_capture.busy', 'off', true);
END $f$;

CREATE FUNCTION harness_capture.on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    command record;
BEGIN
    -- The commands this function runs fire it again; those are the harness's, not the agent's.
    IF harness_capture.busy() THEN
        RETURN;
    END IF;
    FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        -- The capture turns rows into JSON as the superuser: a cast to json of the agent's
        -- would run the agent's function with those rights. No such cast may be made, nor
        -- the function of one replaced.
        IF command.classid = 'pg_catalog.pg_cast'::regclass AND EXISTS (
               SELECT 1 FROM pg_cast WHERE oid = command.objid AND castfunc <> 0
                 AND casttarget IN ('json'::regtype, 'jsonb'::regtype))
           OR command.classid = 'pg_catalog.pg_proc'::regclass AND EXISTS (
               SELECT 1 FROM pg_cast WHERE castfunc = command.objid
                 AND casttarget IN ('json'::regtype, 'jsonb'::regtype)) THEN
            RAISE EXCEPTION 'harness: a cast to json or jsonb through a function cannot be '
                            'made or changed in a sandbox (the capture of changed rows would '
                            'run it); use WITH INOUT, or convert explicitly'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        -- The capture's own objects, and temporary ones (they end with the session).
        IF command.schema_name IN ('harness_capture', 'harness_capture_log')
           OR command.schema_name LIKE 'pg\_temp%' THEN
            CONTINUE;
        END IF;
        INSERT INTO harness_capture.ddl (command_tag, object_type, object_identity, query)
        VALUES (command.command_tag, command.object_type, command.object_identity,
                current_query());
    END LOOP;
    -- New tables get capture triggers; tampered ones get theirs back.
    PERFORM harness_capture.heal();
END $f$;

CREATE FUNCTION harness_capture.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    dropped record;
BEGIN
    -- What the harness drops (a log of an old shape) is not the agent's.
    IF coalesce(harness_capture.busy(), false) THEN
        RETURN;
    END IF;
    FOR dropped IN SELECT * FROM pg_event_trigger_dropped_objects()
                   WHERE original AND NOT is_temporary
                     AND object_type IN ('table', 'schema', 'view', 'index', 'sequence',
                                         'function', 'type')
    LOOP
        INSERT INTO harness_capture.ddl (command_tag, object_type, object_identity, query)
        VALUES (tg_tag, dropped.object_type, dropped.object_identity, current_query());
    END LOOP;
    PERFORM harness_capture.heal();
END $f$;

-- What the sandbox's own transaction has recorded so far (committed changes and its own
-- uncommitted ones), each row under its table's current (or last) name: lets the harness
-- weigh a db_mutate before it commits.
CREATE FUNCTION harness_capture.recorded_changes(after bigint DEFAULT 0,
                                                 upto bigint DEFAULT NULL)
RETURNS TABLE (relname text, via text, op "char", image json, live boolean, statement bigint,
               first_name text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp @READABLE@ AS $f$
DECLARE
    logs text;
BEGIN
    SELECT string_agg(format(' UNION ALL SELECT statement, %s::oid, via, op, row_to_json(image) '
                             'FROM harness_capture_log.%I '
                             'WHERE statement > $1 AND ($2 IS NULL OR statement <= $2)',
                             l.root, 'log_' || l.root), '')
    INTO logs FROM harness_capture.logs l;
    RETURN QUERY EXECUTE format($q$
        WITH names AS (
            SELECT r.relid, coalesce((SELECT @QUALIFIED_NAME@ FROM pg_class c
                                      JOIN pg_namespace n ON n.oid = c.relnamespace
                                      WHERE c.oid = r.relid), r.name) AS name, r.first_name
            FROM harness_capture.relations r
        ), recorded (id, relid, via, op, image) AS (
            SELECT id, relid, via, op, image FROM harness_capture.changes
            WHERE id > $1 AND ($2 IS NULL OR id <= $2) %s
        )
        SELECT coalesce(t.name, c.relid::text), v.name, c.op, c.image,
               EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = c.relid), c.id, t.first_name
        FROM recorded c
        LEFT JOIN names t ON t.relid = c.relid
        LEFT JOIN names v ON v.relid = c.via
        ORDER BY c.id, c.op DESC$q$, coalesce(logs, '')) USING after, upto;
END $f$;

-- Everything recorded so far forgotten: a new baseline starts from nothing.
CREATE FUNCTION harness_capture.forget() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    log text;
BEGIN
    TRUNCATE harness_capture.changes, harness_capture.ddl;
    FOR log IN SELECT format('harness_capture_log.%I', 'log_' || root) FROM harness_capture.logs
    LOOP
        EXECUTE 'TRUNCATE ' || log;
    END LOOP;
END $f$;

-- The number of the last statement recorded: the marks between which an action's
-- statements fall.
CREATE FUNCTION harness_capture.mark() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END
    FROM harness_capture.statement_number
$f$;

-- The masked columns under their current names, per table as change sets name it.
CREATE FUNCTION harness_capture.masked_columns()
RETURNS TABLE (relname text, columns text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    SELECT @QUALIFIED_NAME@, array_agg(a.attname::text ORDER BY a.attnum)
    FROM harness_capture.masked m
    JOIN pg_class c ON c.oid = m.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = m.relid AND a.attnum = m.attnum AND NOT a.attisdropped
    GROUP BY 1
$f$;

REVOKE ALL ON ALL TABLES IN SCHEMA harness_capture FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA harness_capture FROM PUBLIC;

SELECT harness_capture.heal();

CREATE EVENT TRIGGER harness_capture_ddl_start ON ddl_command_start
    EXECUTE FUNCTION harness_capture.on_ddl_start();
ALTER EVENT TRIGGER harness_capture_ddl_start ENABLE ALWAYS;
CREATE EVENT TRIGGER harness_capture_ddl ON ddl_command_end
    EXECUTE FUNCTION harness_capture.on_ddl();
CREATE EVENT TRIGGER harness_capture_drop ON sql_drop
    EXECUTE FUNCTION harness_capture.on_drop();
-- Replica mode (session_replication_role) must not silence them.
ALTER EVENT TRIGGER harness_capture_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER harness_capture_drop ENABLE ALWAYS;
