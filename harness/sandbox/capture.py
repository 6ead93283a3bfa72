"""Exact capture of every row change in a sandbox database, and its netting into a delta.

Why statement-level triggers with transition tables: they see every row an INSERT,
UPDATE, DELETE or MERGE touched, set-based (the field notes measured +6% write cost on a
700k-row table against +145% for row-level triggers writing jsonb; here, with the images
copied typed into a log per table, a bulk INSERT costs ~1.4x, an UPDATE ~1.8x (both images
are kept) and a DELETE ~3.3x (a delete itself is cheap; the rows' images are the
work)), they need no server-wide setting
(logical decoding needs wal_level=logical and a replication slot per database), and what
they record rolls back with the agent's transaction, so a rolled-back change is never
counted. TRUNCATE is captured by a BEFORE TRUNCATE trigger that copies the rows first;
DDL by event triggers. Everything lives in the schema `harness_capture`, owned by the
superuser: the agent's role cannot read it or change its functions. The agent owns the
tables of its copy (so migrations can ALTER them); an event trigger puts back any
capture trigger dropped or disabled, at the end of that very DDL command, before
another statement can run, and the triggers fire ALWAYS (session_replication_role
cannot silence them).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads

from harness.sandbox import catalog

SCHEMA = "harness_capture"

READABLE = ("SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres' "
            "SET extra_float_digits = 1 SET bytea_output = 'hex' SET lc_monetary FROM CURRENT")
"""The settings a row image is written in, whoever's session takes or reads it: the agent
may set any of these in its own session (a float cut short, a time in its zone, bytea
escaped), and an image must read the same to everyone."""

INSTALL = r"""
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
        WITH ours AS (
            SELECT t.tgrelid, t.tgname, t.tgfoid, t.tgtype, t.tgenabled, t.tgqual, t.tgattr
            FROM pg_trigger t
            WHERE t.tgfoid IN ('harness_capture.on_change()'::regprocedure,
                               'harness_capture.on_row_change()'::regprocedure,
                               'harness_capture.on_truncate()'::regprocedure)
               OR t.tgname IN ('harness_capture_insert', 'harness_capture_update',
                               'harness_capture_delete', 'harness_capture_truncate'))
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
               FROM ours t WHERE t.tgrelid = c.oid) <> '4 of 4'
    LOOP
        FOR trigger IN
            SELECT t.tgname FROM pg_trigger t
            WHERE t.tgrelid = rel
              AND (t.tgfoid IN ('harness_capture.on_change()'::regprocedure,
                                'harness_capture.on_row_change()'::regprocedure,
                                'harness_capture.on_truncate()'::regprocedure)
                   OR t.tgname IN ('harness_capture_insert', 'harness_capture_update',
                                   'harness_capture_delete', 'harness_capture_truncate'))
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

CREATE EVENT TRIGGER harness_capture_ddl ON ddl_command_end
    EXECUTE FUNCTION harness_capture.on_ddl();
CREATE EVENT TRIGGER harness_capture_drop ON sql_drop
    EXECUTE FUNCTION harness_capture.on_drop();
-- Replica mode (session_replication_role) must not silence them.
ALTER EVENT TRIGGER harness_capture_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER harness_capture_drop ENABLE ALWAYS;
"""
for _marker, _text in {"@READABLE@": READABLE, "@TOP_LEVEL_TABLE@": catalog.TOP_LEVEL_TABLE,
                       "@TABLE@": catalog.TABLE, "@USER_NAMESPACE@": catalog.USER_NAMESPACE,
                       "@QUALIFIED_NAME@": catalog.QUALIFIED_NAME}.items():
    INSTALL = INSTALL.replace(_marker, _text)


VERSION = hashlib.sha256(INSTALL.encode()).hexdigest()[:8]
"""Changes whenever the capture's SQL does."""


def install(conn: psycopg.Connection[Any]) -> None:
    """Install the capture in the database `conn` is connected to (as the superuser)."""
    conn.execute(INSTALL)


# ------------------------------------------------------------------ row images

load_image = partial(json.loads, parse_float=Decimal)
"""Read JSON with every number exact (PostgreSQL's numeric has more digits than a float)."""

_NUMBER = re.compile(r'"\\u0000N([^"\\]*)\\u0000"')


def _number_marker(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"\x00N{value}\x00"
    return str(value)


def dump_images(value: Any) -> str:
    """JSON text of row images (or anything holding them) with exact numbers: a Decimal
    is written as the number it is, not as a float or a string."""
    text = json.dumps(value, default=_number_marker)
    return _NUMBER.sub(r"\1", text) if "\\u0000N" in text else text


# ------------------------------------------------------------------ deltas


@dataclass(frozen=True)
class RowUpdate:
    """A row that exists before and after with different contents."""

    key: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    changed: list[str]


@dataclass(frozen=True)
class TableDelta:
    """The net change of one table. `key` lists its primary-key columns; empty means the
    table has none and rows are identified by their whole contents (so an UPDATE shows
    as the old row deleted and the new one inserted, and duplicates count one by one).
    A partitioned table's rows are reported under it, whichever partition a statement
    named; `partitions` counts them per partition where that is known."""

    table: str
    key: list[str]
    inserted: list[dict[str, Any]] = field(default_factory=list)
    updated: list[RowUpdate] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    partitions: dict[str, dict[str, int]] = field(default_factory=dict)
    masked: list[str] = field(default_factory=list)
    """Columns whose values in the sandbox are masks, not the real ones (so they are not
    the target's either): never written, never compared."""
    sources: dict[str, list[int]] = field(default_factory=dict)
    """The statements (capture numbers) that changed each row, by `row_id`."""
    aliases: list[str] = field(default_factory=list)
    """Earlier names of the table (renamed since it was first watched)."""

    def row_id(self, image: dict[str, Any]) -> str:
        """How `sources` names a row: its key's values (its whole image without a key)."""
        return _key_text(image, self.key) if self.key else dump_images(image)

    @property
    def rows(self) -> int:
        """Rows inserted, updated and deleted."""
        return len(self.inserted) + len(self.updated) + len(self.deleted)

    def counts(self) -> dict[str, int]:
        """Inserted, updated and deleted counts."""
        return {"inserted": len(self.inserted), "updated": len(self.updated),
                "deleted": len(self.deleted)}


@dataclass(frozen=True)
class DdlStatement:
    """A schema change, in the order it ran."""

    command_tag: str
    object_type: str | None
    object_identity: str | None
    query: str | None


@dataclass(frozen=True)
class RowDelta:
    """Every row changed in a sandbox database since its snapshot, and the DDL run."""

    tables: dict[str, TableDelta] = field(default_factory=dict)
    ddl: list[DdlStatement] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Tables dropped (their rows went with them, uncounted), as PostgreSQL names them."""

    @property
    def rows(self) -> int:
        """Rows changed over all tables."""
        return sum(t.rows for t in self.tables.values())

    def summary(self) -> dict[str, Any]:
        """Per-table counts, totals and the DDL in order: what `harness exec --json` shows."""
        per_table: dict[str, dict[str, Any]] = {
            name: {**t.counts(), **({"partitions": t.partitions} if t.partitions else {})}
            for name, t in sorted(self.tables.items())}
        totals = {k: sum(len(getattr(t, k)) for t in self.tables.values())
                  for k in ("inserted", "updated", "deleted")}
        return {"tables": per_table, "total": {**totals, "rows": self.rows},
                "ddl": [d.query or d.command_tag for d in self.ddl]}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (row images included; shared, not copied)."""
        return {
            "tables": {name: {"table": t.table, "key": t.key, "inserted": t.inserted,
                              "updated": [{"key": u.key, "before": u.before, "after": u.after,
                                           "changed": u.changed} for u in t.updated],
                              "deleted": t.deleted, "partitions": t.partitions,
                              "masked": t.masked, "sources": t.sources,
                              "aliases": t.aliases}
                       for name, t in sorted(self.tables.items())},
            "ddl": [asdict(d) for d in self.ddl], "dropped": self.dropped,
            "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowDelta:
        """The inverse of `to_dict`."""
        tables = {name: TableDelta(name, t["key"], t["inserted"],
                                   [RowUpdate(**u) for u in t["updated"]], t["deleted"],
                                   t.get("partitions") or {}, t.get("masked") or [],
                                   t.get("sources") or {}, t.get("aliases") or [])
                  for name, t in data["tables"].items()}
        return cls(tables, [DdlStatement(**d) for d in data.get("ddl", [])],
                   list(data.get("dropped") or []))


Event = tuple[str, dict[str, Any], str | None, int]
"""One captured row image: op ('-' removed, '+' added), the image, the partition the
statement named (None when it named the table itself), and the statement's number."""


def read_delta(conn: psycopg.Connection[Any], *, ddl: bool = True,
               between: tuple[Mark, Mark] | None = None) -> RowDelta:
    """The net delta of every change recorded, as `conn` sees them: a superuser's
    connection, or the sandbox role's own inside its transaction (then without DDL).
    Normally the whole log (a mark to read "only what came since" would miss statements of
    a transaction still open when it was taken); with `between` (two `mark`s), only the
    statements numbered after the first and up to the second, netted from the state before
    them, and the schema changes between them: what one action did. A table renamed
    meanwhile is one table under its new name. Each row carries the statements that
    changed it (`TableDelta.sources`)."""
    set_json_loads(load_image, conn)
    events: dict[str, list[Event]] = {}
    after, upto = (between[0].statement, between[1].statement) if between else (0, None)
    ddl_after, ddl_upto = (between[0].ddl, between[1].ddl) if between else (0, None)
    aliases: dict[str, str] = {}
    for relname, via, op, image, live, statement, first_name in conn.execute(
            "SELECT relname, via, op, image, live, statement, first_name "
            "FROM harness_capture.recorded_changes(%s, %s)", (after, upto)):
        # A table dropped since: what happened to its rows is the DROP (in the DDL); a
        # new table of its name is another table.
        if not live:
            continue
        events.setdefault(relname, []).append((op, image, via, statement))
        if first_name and first_name != relname:
            aliases[relname] = first_name
    for name, columns in (virtual_columns(conn, list(events)) if events else {}).items():
        for _op, image, _via, _statement in events[name]:
            for column in columns:
                image.pop(column, None)
    keys = primary_keys(conn, list(events)) if events else {}
    partitioned = partition_columns(conn, list(events)) if events else {}
    masked = dict(conn.execute("SELECT * FROM harness_capture.masked_columns()").fetchall()
                  ) if events else {}
    tables = {name: replace(pair_moves(net(name, keys.get(name, []), table_events),
                                       partitioned.get(name, [])),
                            masked=list(masked.get(name, [])),
                            aliases=[aliases[name]] if name in aliases else [])
              for name, table_events in events.items()}
    statements: list[DdlStatement] = []
    dropped: list[str] = []
    for row in (conn.execute("SELECT command_tag, object_type, object_identity, query "
                             "FROM harness_capture.ddl WHERE id > %s "
                             "AND (%s::bigint IS NULL OR id <= %s) ORDER BY id",
                             (ddl_after, ddl_upto, ddl_upto)) if ddl else []):
        statement = DdlStatement(*row)
        if statement.object_type == "table" and statement.object_identity \
                and statement.command_tag.startswith("DROP"):
            dropped.append(statement.object_identity)
        # One statement reports each object it made (a table and its key's index).
        if statements and statements[-1].query == statement.query and statement.query:
            continue
        statements.append(statement)
    return RowDelta({n: t for n, t in tables.items() if t.rows}, statements, dropped)


@dataclass(frozen=True)
class Mark:
    """How far the capture had got: the last statement and the last schema change it
    recorded (0 before any). What one action did lies between its marks."""

    statement: int
    ddl: int


def mark(conn: psycopg.Connection[Any]) -> Mark:
    """Where the capture stands now."""
    row = conn.execute("SELECT harness_capture.mark(), "
                       "(SELECT coalesce(max(id), 0) FROM harness_capture.ddl)").fetchone()
    return Mark(int(row[0]), int(row[1])) if row else Mark(0, 0)


def record_masked(conn: psycopg.Connection[Any], masked: dict[str, list[str]]) -> None:
    """Remember which columns masking replaced (`masking.apply_masks`' result), by number."""
    for table, columns in masked.items():
        conn.execute("""
            INSERT INTO harness_capture.masked
            SELECT attrelid, attnum FROM pg_attribute
            WHERE attrelid = %s::regclass AND attname = ANY (%s)""", (table, columns))


def virtual_columns(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str]]:
    """Virtual generated columns (PostgreSQL 18) of `tables`: computed when read, never
    stored, so in no image (a row-by-row capture would see them as null)."""
    rows = conn.execute("""
        SELECT t.name, array_agg(a.attname)
        FROM unnest(%s::text[]) AS t(name)
        JOIN pg_attribute a ON a.attrelid = to_regclass(t.name)
        WHERE a.attgenerated = 'v' AND a.attnum > 0 AND NOT a.attisdropped
        GROUP BY t.name""", (tables,)).fetchall()
    return {name: list(columns) for name, columns in rows}


def primary_keys(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str]]:
    """Primary-key columns of `tables` (quoted `schema.table` names; dropped ones skipped)."""
    rows = conn.execute("""
        SELECT t.name,
               array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))
        FROM unnest(%s::text[]) AS t(name)
        JOIN pg_index i ON i.indrelid = to_regclass(t.name) AND i.indisprimary
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        GROUP BY t.name""", (tables,)).fetchall()
    return {name: list(columns) for name, columns in rows}


def partition_columns(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str]]:
    """The partition-key columns of each partitioned table among `tables`, at every level
    of its partition tree (expressions are not columns and are left out)."""
    rows = conn.execute("""
        SELECT t.name, array_agg(DISTINCT b.attname)
        FROM unnest(%s::text[]) AS t(name)
        JOIN pg_partition_tree(to_regclass(t.name)) tree ON NOT tree.isleaf
        JOIN pg_partitioned_table p ON p.partrelid = tree.relid
        JOIN pg_attribute b ON b.attrelid = tree.relid AND b.attnum = ANY(p.partattrs)
        WHERE to_regclass(t.name) IS NOT NULL
        GROUP BY t.name""", (tables,)).fetchall()
    return {name: list(columns) for name, columns in rows}


def pair_moves(delta: TableDelta, partition_keys: list[str]) -> TableDelta:
    """A row that moved to another partition changed its primary key (which includes the
    partition key), so netting by key sees it deleted and inserted. Where the key without
    its partition columns still names exactly one deleted and one inserted row, they are
    one row that moved: one update, applied to the target as one UPDATE (which moves it
    there too)."""
    identity = [column for column in delta.key if column not in partition_keys]
    if not partition_keys or not identity or len(identity) == len(delta.key):
        return delta

    def of(row: dict[str, Any]) -> str:
        return json.dumps([row.get(c) for c in identity], default=str)

    gone = Counter(of(row) for row in delta.deleted)
    new = Counter(of(row) for row in delta.inserted)
    moved = {k for k in gone if gone[k] == 1 and new.get(k) == 1}
    if not moved:
        return delta
    befores = {of(row): row for row in delta.deleted if of(row) in moved}
    updates = list(delta.updated)
    sources = dict(delta.sources)
    for after in (row for row in delta.inserted if of(row) in moved):
        before = befores[of(after)]
        changed = sorted(c for c in set(before) | set(after) if before.get(c) != after.get(c))
        updates.append(RowUpdate({k: before.get(k) for k in delta.key}, before, after, changed))
        # One row now, named by its key before the move.
        moved_from = sources.pop(delta.row_id(before), [])
        sources[delta.row_id(before)] = sorted({*moved_from,
                                               *sources.pop(delta.row_id(after), [])})
    return TableDelta(delta.table, delta.key,
                      [row for row in delta.inserted if of(row) not in moved], updates,
                      [row for row in delta.deleted if of(row) not in moved],
                      delta.partitions, delta.masked, sources, delta.aliases)


def net(table: str, key: list[str], events: list[Event]) -> TableDelta:
    """Net a table's removals ('-') and additions ('+') into a delta, per key. The images
    of one key normally form a chain (each removal removes what the previous addition
    added, in the shape the table had then: a column added or dropped in between does not
    break it); when a trigger of the user writes the same rows, a nested statement's images
    are recorded before those of the statement that started it, and the chain is out of
    order. Then the images are netted as multisets: what was removed and never added back
    is the before-image, what was added and never removed the after-image."""
    if not key or any(column not in event[1] for event in events for column in key):
        # No key, or images taken before the table got the key it has now (its primary key
        # was changed since): rows are known by their whole contents.
        return _net_by_contents(table, events)
    per_key: dict[str, list[Event]] = {}
    for event in events:
        image = event[1]
        per_key.setdefault(_key_text(image, key), []).append(event)
    delta = TableDelta(table, key)
    for key_text, history in per_key.items():
        before, after, where_before, where_after = _resolve(history)
        if before is not None or after is not None:
            delta.sources[key_text] = sorted({event[3] for event in history})
        if before is None and after is not None:
            delta.inserted.append(after)
            _count(delta, where_after, "inserted")
        elif before is not None and after is None:
            delta.deleted.append(before)
            _count(delta, where_before, "deleted")
        elif before is not None and after is not None and before != after:
            changed = sorted(c for c in set(before) | set(after) if before.get(c) != after.get(c))
            delta.updated.append(RowUpdate({k: before.get(k) for k in key}, before, after,
                                           changed))
            _count(delta, where_after, "updated")
    return delta


def _key_text(image: dict[str, Any], key: list[str]) -> str:
    values = [image.get(column) for column in key]
    if all(isinstance(v, int | str) and not isinstance(v, bool) for v in values):
        return repr(values)
    return dump_images(values)  # arrays, json, numbers: compared by their exact text


_MISSING = object()


def _resolve(history: list[Event]) -> tuple[Any, Any, str | None, str | None]:
    """(before, after, partition of before, partition of after) of one key's history."""
    state: Any = _MISSING
    first: Any = _MISSING
    where_before = where_after = None
    for op, image, via, _statement in history:
        if op == "-":
            if state is _MISSING:
                first, where_before = image, via  # it existed at the snapshot, as this
            elif state is None or not _continues(state, image):
                return _by_multiset(history)
            state = None
        else:
            if state is _MISSING:
                first = None  # an addition first: it did not exist
            elif state is not None:
                return _by_multiset(history)
            state, where_after = image, via
    return (None if first is _MISSING else first), (None if state is _MISSING else state), \
        where_before, where_after


def _continues(added: dict[str, Any], removed: dict[str, Any]) -> bool:
    """Whether `removed` is the row `added` put there, seen after any change of the table's
    columns in between: the same values in every column both images have."""
    if added.keys() == removed.keys():
        return added == removed
    return all(added[column] == removed[column] for column in added.keys() & removed.keys())


def _by_multiset(history: list[Event]) -> tuple[Any, Any, str | None, str | None]:
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    images: dict[str, tuple[dict[str, Any], str | None]] = {}
    for op, image, via, _statement in history:
        text = dump_images(image)
        images[text] = (image, via)
        (added if op == "+" else removed)[text] += 1
    after = list((added - removed).elements())
    before = list((removed - added).elements())
    after_image, where_after = images[after[-1]] if after else (None, None)
    before_image, where_before = images[before[0]] if before else (None, None)
    return before_image, after_image, where_before, where_after


def _count(delta: TableDelta, partition: str | None, what: str) -> None:
    if partition is not None:
        counts = delta.partitions.setdefault(partition, {"inserted": 0, "updated": 0,
                                                         "deleted": 0})
        counts[what] += 1


def _net_by_contents(table: str, events: list[Event]) -> TableDelta:
    balance: Counter[str] = Counter()
    statements: dict[str, set[int]] = {}
    for op, image, _via, statement in events:
        encoded = dump_images(image)
        balance[encoded] += 1 if op == "+" else -1
        statements.setdefault(encoded, set()).add(statement)
    delta = TableDelta(table, [])
    for encoded, count in sorted(balance.items()):
        rows = [load_image(encoded)] * abs(count)
        (delta.inserted if count > 0 else delta.deleted).extend(rows)
        if count:
            delta.sources[encoded] = sorted(statements[encoded])
    return delta
