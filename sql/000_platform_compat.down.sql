-- Reverts the platform compatibility layer: drops only what its up recorded as created
-- (x402_private.compat_objects), never with CASCADE and never DROP OWNED BY, so no object of
-- anyone else's is ever dropped, whatever flags are given. An object that something else
-- depends on, or that a function body names (PL/pgSQL and SQL string bodies record no
-- dependency), and a role that still owns, is named in, or holds privileges on anything else
-- (here or in another database of the cluster), is granted to another role, or that an operator
-- has since set up (a membership, a setting, a password: DROP ROLE would take them without a
-- word), is kept, and a WARNING names what holds it; the engine prints those warnings. Of the
-- default privileges, only the entries the up recorded as its own are revoked; when it recorded
-- none (a layer applied by an earlier release), those naming the API roles are kept and named.
-- x402:lock: auth.users
-- x402:guard data-loss: SELECT count(*) FROM auth.users WHERE EXISTS (SELECT 1 FROM x402_private.compat_objects WHERE kind = 'table' AND identity = 'auth.users') | row(s) in auth.users would be dropped

DO $$
DECLARE
  o record;
  a record;
  r text;
  nsp text;
  pattern text;
  revoked jsonb := '[]';
  grantor text;
  grantee text;
  path_names_auth boolean;
  now_oid oid;
  other_dbs text;
  role_oid oid;
  detail text;
  uses text;
  server_path text;
  has_password boolean;
BEGIN
  IF to_regclass('x402_private.compat_objects') IS NULL THEN
    RAISE WARNING 'kept the roles anon, authenticated, service_role, authenticator, schema auth and the default privileges in schema public: this compat layer was applied before it recorded what it created, so none of it is dropped';
    RETURN;
  END IF;
  -- Recorded by the previous release, the table has no OIDs yet: its rows are taken by name.
  ALTER TABLE x402_private.compat_objects ADD COLUMN IF NOT EXISTS object_oid oid;

  -- A layer applied by an earlier release recorded no default privileges: none can be told from an
  -- operator's, so none is revoked, and the ones naming the API roles are said to be kept.
  IF NOT EXISTS (SELECT 1 FROM x402_private.compat_objects WHERE kind = 'default_acl') THEN
    SELECT string_agg(format('%s ON %s TO %s (defaults of role %s)', g.privs, g.o, g.t, g.r), '; '
                      ORDER BY g.r, g.o, g.t) INTO detail
    FROM (SELECT d.defaclrole::regrole::text r, acl.grantee::regrole::text t,
                 CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                                      WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END o,
                 string_agg(acl.privilege_type, ', ' ORDER BY acl.privilege_type) privs
          FROM pg_default_acl d, aclexplode(d.defaclacl) acl
          WHERE d.defaclnamespace = 'public'::regnamespace
            AND acl.grantee IN (SELECT oid FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role'))
          GROUP BY 1, 2, 3) g;
    IF detail IS NOT NULL THEN
      RAISE WARNING 'kept the default privileges in schema public: %; the compat layer recorded none of them as its own (a layer applied by an earlier release records none), so none is revoked; if they are the layer''s, revoke them yourself: ALTER DEFAULT PRIVILEGES FOR ROLE <role> IN SCHEMA public REVOKE ALL ON TABLES (then SEQUENCES, FUNCTIONS) FROM anon, authenticated, service_role', detail;
    END IF;
  END IF;

  -- The server's own search_path (postgresql.conf, ALTER SYSTEM): what a session starts with, and
  -- the files' value where this role may read them (a session of this role may override it).
  server_path := (SELECT reset_val FROM pg_settings WHERE name = 'search_path');
  BEGIN
    server_path := concat_ws(', ', server_path, (SELECT string_agg(setting, ', ') FROM pg_file_settings
                                                 WHERE name = 'search_path' AND error IS NULL));
  EXCEPTION WHEN insufficient_privilege THEN
    NULL;
  END;

  -- Default privileges: exactly the entries the up recorded, each revoked from the defaults of
  -- the role that ran it. The entries it found, and other roles' entries, stay as they are.
  FOR a IN SELECT identity, identity::jsonb AS e FROM x402_private.compat_objects WHERE kind = 'default_acl'
           ORDER BY identity LOOP
    IF NOT (a.e ->> 'on' = ANY (ARRAY['TABLES', 'SEQUENCES', 'FUNCTIONS'])
            AND a.e ->> 'privilege' = ANY (ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES',
                                                 'TRIGGER', 'MAINTAIN', 'USAGE', 'EXECUTE'])) THEN
      RAISE WARNING 'kept default privilege %: not one the compat layer grants', a.identity;
      CONTINUE;
    END IF;
    -- The roles by OID, under their names of today: a role dropped (with it, its default
    -- privileges) and perhaps re-created under the same name leaves nothing of ours to revoke.
    grantor := (SELECT rolname FROM pg_roles WHERE CASE WHEN a.e ? 'role_oid' THEN oid = (a.e ->> 'role_oid')::oid
                                                        ELSE rolname = a.e ->> 'role' END);
    grantee := (SELECT rolname FROM pg_roles WHERE CASE WHEN a.e ? 'to_oid' THEN oid = (a.e ->> 'to_oid')::oid
                                                        ELSE rolname = a.e ->> 'to' END);
    IF grantor IS NULL OR grantee IS NULL OR NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = a.e ->> 'schema') THEN
      DELETE FROM x402_private.compat_objects WHERE kind = 'default_acl' AND identity = a.identity;
      CONTINUE;
    END IF;
    BEGIN
      EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I REVOKE %s ON %s FROM %I',
                     grantor, a.e ->> 'schema', a.e ->> 'privilege', a.e ->> 'on', grantee);
      DELETE FROM x402_private.compat_objects WHERE kind = 'default_acl' AND identity = a.identity;
      revoked := revoked || jsonb_build_array(a.e || jsonb_build_object('role', grantor, 'to', grantee));
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'kept default privilege % on % in schema % to % (defaults of role %): role % may not change them',
        a.e ->> 'privilege', a.e ->> 'on', a.e ->> 'schema', grantee, grantor, current_user;
    END;
  END LOOP;

  -- Said, because PostgreSQL keeps no trace of a later grant of a privilege already granted.
  IF jsonb_array_length(revoked) > 0 THEN
    SELECT string_agg(format('%s ON %s TO %I (defaults of role %I in schema %I)', privs, g.o, g.t, g.r, g.s), '; '
                      ORDER BY g.r, g.s, g.o, g.t) INTO detail
    FROM (SELECT e ->> 'role' r, e ->> 'schema' s, e ->> 'on' o, e ->> 'to' t,
                 string_agg(e ->> 'privilege', ', ' ORDER BY e ->> 'privilege') privs
          FROM jsonb_array_elements(revoked) e GROUP BY 1, 2, 3, 4) g;
    RAISE WARNING 'revoked the default privileges the compat layer had added: %; the same grant made again later by that role cannot be told apart and went too: re-run it if you need it', detail;
  END IF;

  -- Objects next, each on its own and RESTRICT: one that anything else depends on is kept.
  FOR o IN SELECT kind, identity, object_oid FROM x402_private.compat_objects WHERE kind NOT IN ('role', 'default_acl')
           ORDER BY array_position(ARRAY['function', 'table', 'schema'], kind), identity LOOP
    -- Dropped, or dropped and made again by someone else, since the layer created it.
    now_oid := CASE o.kind
      WHEN 'schema' THEN to_regnamespace(o.identity)::oid
      WHEN 'table' THEN to_regclass(o.identity)::oid
      WHEN 'function' THEN to_regprocedure(o.identity)::oid END;
    IF o.object_oid IS NOT NULL AND o.object_oid IS DISTINCT FROM now_oid THEN
      DELETE FROM x402_private.compat_objects WHERE kind = o.kind AND identity = o.identity;
      IF now_oid IS NOT NULL THEN
        RAISE WARNING 'kept % %: it is not the object the compat layer created (its OID changed: made again since, or the database was restored from a dump); drop it yourself if it is the layer''s', o.kind, o.identity;
      END IF;
      CONTINUE;
    END IF;
    -- Recorded by name only (the previous release): from now on by OID too, so that an object
    -- made under its name after this revert keeps it is not taken for the layer's.
    IF o.object_oid IS NULL AND now_oid IS NOT NULL THEN
      UPDATE x402_private.compat_objects SET object_oid = now_oid WHERE kind = o.kind AND identity = o.identity;
    END IF;
    -- RESTRICT keeps a table that other objects reference, but silently drops what hangs on
    -- it (triggers, policies, indexes, rules, columns): those are the project's, so keep it.
    IF o.kind = 'table' AND to_regclass(o.identity) IS NOT NULL THEN
      SELECT string_agg(x, '; ' ORDER BY x) INTO uses FROM (
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS x
        FROM pg_depend d
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass(o.identity) AND d.deptype = 'a'
          AND d.classid <> 'pg_attrdef'::regclass  -- column defaults go with their columns
          AND NOT (d.classid = 'pg_constraint'::regclass AND d.objid IN (
                -- its primary key, and (PostgreSQL 18 catalogs it) the key's NOT NULL
                SELECT c.oid FROM pg_constraint c, pg_constraint pk
                WHERE c.conrelid = to_regclass(o.identity) AND pk.conrelid = c.conrelid AND pk.contype = 'p'
                  AND (c.oid = pk.oid OR (c.contype = 'n' AND c.conkey <@ pk.conkey))))
        UNION ALL
        SELECT 'column ' || attname FROM pg_attribute
        WHERE attrelid = to_regclass(o.identity) AND attnum > 0 AND NOT attisdropped
          AND attname NOT IN ('id', 'email', 'raw_app_meta_data', 'raw_user_meta_data', 'created_at', 'updated_at')
      ) own;
      IF uses IS NOT NULL THEN
        RAISE WARNING 'kept table %: it carries objects the compat layer did not create (%)', o.identity, uses;
        CONTINUE;
      END IF;
    END IF;
    -- A PL/pgSQL or SQL string body records no dependency, so RESTRICT cannot see that a project
    -- function calls auth.uid(): search the bodies for the qualified name, and for the bare name
    -- where the schema is on the function's search_path (its own SET, else the database's, a
    -- role's or the server's). A schema is not searched for: RESTRICT keeps it while it holds anything, and
    -- once it is empty no body can use it.
    uses := NULL;
    IF o.kind <> 'schema' THEN
      nsp := split_part(o.identity, '.', 1);
      pattern := CASE o.kind
        WHEN 'function' THEN '"?' || regexp_replace(split_part(o.identity, '.', 2), '\(\)$', '') || '"?\s*\('
        ELSE '"?' || split_part(o.identity, '.', 2) || '"?([^a-z0-9_$]|$)' END;
      path_names_auth := EXISTS (
        SELECT 1 FROM pg_db_role_setting rs, unnest(rs.setconfig) s
        WHERE rs.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
          AND s ~* ('^search_path=(.*[ ,"])?' || nsp || '([ ,"]|$)'))
        OR server_path ~* ('(^|[ ,"])' || nsp || '([ ,"]|$)');
      SELECT string_agg(DISTINCT quote_ident(n.nspname) || '.' || quote_ident(p.proname)
                        || '(' || pg_get_function_identity_arguments(p.oid) || ')', ', ') INTO uses
      FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE l.lanname NOT IN ('internal', 'c')
        AND NOT EXISTS (SELECT 1 FROM x402_private.compat_objects c
                        WHERE c.kind = 'function' AND to_regprocedure(c.identity) = p.oid)
        AND (p.prosrc ~* ('(^|[^a-z0-9_$])"?' || nsp || '"?\s*\.\s*' || pattern)
             OR (p.prosrc ~* ('(^|[^a-z0-9_$."])' || pattern)
                 AND CASE WHEN EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s ~* '^search_path=')
                     THEN EXISTS (SELECT 1 FROM unnest(p.proconfig) s
                                  WHERE s ~* ('^search_path=(.*[ ,"])?' || nsp || '([ ,"]|$)'))
                     ELSE path_names_auth END));
    END IF;
    IF uses IS NOT NULL THEN
      RAISE WARNING 'kept % %: the body of function % refers to it (function bodies record no dependency)',
        o.kind, o.identity, uses;
      CONTINUE;
    END IF;
    BEGIN
      EXECUTE format('DROP %s IF EXISTS %s RESTRICT', o.kind, o.identity);
      DELETE FROM x402_private.compat_objects WHERE kind = o.kind AND identity = o.identity;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
      RAISE WARNING 'kept % %: other objects depend on it (%)', o.kind, o.identity, replace(detail, E'\n', '; ');
    END;
  END LOOP;

  -- authenticator last: the API roles log in through it, so it stays while another database
  -- of the cluster still uses them (nothing there records a dependency on authenticator).
  FOREACH r IN ARRAY ARRAY['service_role', 'authenticated', 'anon', 'authenticator'] LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r);
    SELECT oid INTO role_oid FROM pg_roles WHERE rolname = r;
    now_oid := (SELECT object_oid FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r);
    IF role_oid IS NULL OR role_oid IS DISTINCT FROM coalesce(now_oid, role_oid) THEN
      -- Gone, or dropped and made again since the layer created it (or restored into another cluster).
      DELETE FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r;
      IF role_oid IS NOT NULL THEN
        RAISE WARNING 'kept role %: it is not the role the compat layer created (its OID changed: made again since, or the database was restored into another cluster); drop it yourself if it is the layer''s', r;
      END IF;
      CONTINUE;
    END IF;
    IF now_oid IS NULL THEN
      UPDATE x402_private.compat_objects SET object_oid = role_oid WHERE kind = 'role' AND identity = r;
    END IF;
    IF r = 'authenticator' AND other_dbs IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_auth_members WHERE member = role_oid) THEN
      RAISE WARNING 'kept role authenticator: the roles it logs in as are still used in database %', other_dbs;
      CONTINUE;
    END IF;
    -- A password set since is the operator's (the up creates none). Only pg_authid says, and only
    -- to a role that may read it; one that may not cannot tell, so a role that can log in stays.
    has_password := NULL;
    IF has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN
      has_password := (SELECT rolpassword IS NOT NULL FROM pg_catalog.pg_authid WHERE oid = role_oid);
    END IF;
    -- Anything that still refers to it, but the USAGE on public the up granted: owned objects,
    -- privileges, default privileges, policies, memberships either way (but authenticator's in the
    -- API roles, the up's own), settings, a password. A role kept keeps all of them.
    SELECT string_agg(u, '; ' ORDER BY u) INTO uses FROM (
      SELECT DISTINCT CASE
          WHEN d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) THEN
            CASE d.deptype WHEN 'o' THEN 'owns ' WHEN 'r' THEN 'is named in ' ELSE 'holds privileges on ' END
            || pg_describe_object(d.classid, d.objid, d.objsubid)
          ELSE 'owns or holds privileges on objects in database ' || (SELECT datname FROM pg_database WHERE oid = d.dbid)
        END AS u
      FROM pg_shdepend d
      WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = role_oid
        AND NOT (d.classid = 'pg_namespace'::regclass AND d.objid = 'public'::regnamespace AND d.deptype = 'a'
                 AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND NOT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) x
                                 WHERE n.nspname = 'public' AND x.grantee = role_oid AND x.privilege_type <> 'USAGE'))
      UNION
      SELECT 'is granted to role ' || m.member::regrole::text
      FROM pg_auth_members m
      WHERE m.roleid = role_oid AND m.member::regrole::text <> 'authenticator'
      UNION
      SELECT 'is a member of role ' || m.roleid::regrole::text
      FROM pg_auth_members m
      WHERE m.member = role_oid
        AND NOT (r = 'authenticator' AND m.roleid::regrole::text IN ('anon', 'authenticated', 'service_role'))
      UNION
      -- The settings' names only: a value is the operator's to read, not the revert's to print.
      SELECT 'has settings (' || (SELECT string_agg(split_part(s, '=', 1), ', ' ORDER BY s) FROM unnest(rs.setconfig) s)
             || CASE WHEN rs.setdatabase = 0 THEN ') in every database'
                     ELSE ') in database ' || coalesce((SELECT datname FROM pg_database WHERE oid = rs.setdatabase),
                                                       rs.setdatabase::text) END
      FROM pg_db_role_setting rs
      WHERE rs.setrole = role_oid
      UNION
      SELECT 'has a password' WHERE has_password
      UNION
      SELECT format('may have a password (role %s may not read pg_authid to tell); drop it yourself if it has none',
                    current_user)
      WHERE has_password IS NULL AND (SELECT rolcanlogin FROM pg_roles WHERE oid = role_oid)
    ) refs;
    SELECT string_agg(DISTINCT db.datname, ', ') INTO detail
    FROM pg_shdepend d JOIN pg_database db ON db.oid = d.dbid
    WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = role_oid AND db.datname <> current_database();
    other_dbs := nullif(concat_ws(', ', other_dbs, detail), '');
    IF uses IS NOT NULL THEN
      RAISE WARNING 'kept role %: it still %', r, uses;
      CONTINUE;
    END IF;
    BEGIN
      -- In the same subtransaction: a role that cannot be dropped keeps its USAGE too.
      EXECUTE format('REVOKE USAGE ON SCHEMA public FROM %I', r);
      EXECUTE format('DROP ROLE %I', r);
      DELETE FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
      RAISE WARNING 'kept role %: %', r, replace(detail, E'\n', '; ');
    END;
  END LOOP;
END
$$;
