-- Reverts the platform compatibility layer: drops only what its up recorded as created
-- (x402_private.compat_objects), never with CASCADE and never DROP OWNED BY, so no object of
-- anyone else's is ever dropped, whatever flags are given. An object that something else
-- depends on, and a role that still owns, is named in, or holds privileges on anything else
-- (here or in another database of the cluster), or is granted to another role, is kept, and a
-- WARNING names what holds it; the engine prints those warnings.
-- x402:lock: auth.users
-- x402:guard data-loss: SELECT count(*) FROM auth.users WHERE EXISTS (SELECT 1 FROM x402_private.compat_objects WHERE kind = 'table' AND identity = 'auth.users') | row(s) in auth.users would be dropped

DO $$
DECLARE
  o record;
  r text;
  role_oid oid;
  detail text;
  uses text;
BEGIN
  IF to_regclass('x402_private.compat_objects') IS NULL THEN
    RAISE WARNING 'kept the roles anon, authenticated, service_role, authenticator and schema auth: this compat layer was applied before it recorded what it created, so none of it is dropped';
    RETURN;
  END IF;

  -- Objects first, each on its own and RESTRICT: one that anything else depends on is kept.
  FOR o IN SELECT kind, identity FROM x402_private.compat_objects WHERE kind <> 'role'
           ORDER BY array_position(ARRAY['function', 'table', 'schema'], kind), identity LOOP
    BEGIN
      EXECUTE format('DROP %s IF EXISTS %s RESTRICT', o.kind, o.identity);
      DELETE FROM x402_private.compat_objects WHERE kind = o.kind AND identity = o.identity;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
      RAISE WARNING 'kept % %: other objects depend on it (%)', o.kind, o.identity, replace(detail, E'\n', '; ');
    END;
  END LOOP;

  FOREACH r IN ARRAY ARRAY['authenticator', 'service_role', 'authenticated', 'anon'] LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r);
    SELECT oid INTO role_oid FROM pg_roles WHERE rolname = r;
    IF role_oid IS NULL THEN
      DELETE FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r;
      CONTINUE;
    END IF;
    -- What the compat layer itself granted the role in this database.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM %I', r);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM %I', r);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM %I', r);
    EXECUTE format('REVOKE USAGE ON SCHEMA public FROM %I', r);
    -- Anything else that still refers to it: owned objects, privileges, policies, memberships.
    SELECT string_agg(u, '; ' ORDER BY u) INTO uses FROM (
      SELECT DISTINCT CASE
          WHEN d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) THEN
            CASE d.deptype WHEN 'o' THEN 'owns ' WHEN 'r' THEN 'is named in ' ELSE 'holds privileges on ' END
            || pg_describe_object(d.classid, d.objid, d.objsubid)
          ELSE 'owns or holds privileges on objects in database ' || (SELECT datname FROM pg_database WHERE oid = d.dbid)
        END AS u
      FROM pg_shdepend d
      WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = role_oid
      UNION
      SELECT 'is granted to role ' || m.member::regrole::text
      FROM pg_auth_members m
      WHERE m.roleid = role_oid AND m.member::regrole::text <> 'authenticator'
    ) refs;
    IF uses IS NOT NULL THEN
      RAISE WARNING 'kept role %: it still %', r, uses;
      CONTINUE;
    END IF;
    BEGIN
      EXECUTE format('DROP ROLE %I', r);
      DELETE FROM x402_private.compat_objects WHERE kind = 'role' AND identity = r;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
      RAISE WARNING 'kept role %: %', r, replace(detail, E'\n', '; ');
    END;
  END LOOP;
END
$$;
