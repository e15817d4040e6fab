-- Reverts the platform compatibility layer. Roles are cluster-wide: a role still referenced from
-- another database of the cluster is kept (with a NOTICE) rather than failing the revert.
-- x402:lock: auth.users
-- x402:guard data-loss: SELECT count(*) FROM auth.users | row(s) in auth.users would be dropped

ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated, service_role;
REVOKE USAGE ON SCHEMA public FROM anon, authenticated, service_role;

DROP FUNCTION IF EXISTS auth.jwt();
DROP FUNCTION IF EXISTS auth.role();
DROP FUNCTION IF EXISTS auth.uid();
DROP TABLE IF EXISTS auth.users;
DROP SCHEMA IF EXISTS auth;

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['authenticator', 'service_role', 'authenticated', 'anon'] LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    EXECUTE format('DROP OWNED BY %I', r);
    IF EXISTS (
      SELECT 1 FROM pg_shdepend d
      WHERE d.refclassid = 'pg_authid'::regclass
        AND d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = r)
    ) THEN
      RAISE NOTICE 'role % is still used by another database of this cluster; kept', r;
    ELSE
      EXECUTE format('DROP ROLE %I', r);
    END IF;
  END LOOP;
END
$$;
