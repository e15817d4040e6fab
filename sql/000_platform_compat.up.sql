-- Platform compatibility: what Supabase provides and plain PostgreSQL lacks.
-- Applied only on target "postgres", so that a local database behaves like production.
-- This file is the single owner of the platform roles on that target (the Pulumi program
-- creates none of them), so `make deploy` and `pulumi up` build the same cluster.
-- x402:targets: postgres
-- x402:supersedes: 1f5590331f6dc415852d7e6cf44bd03598a5d3c7191a1f99c65e31d484addc5a pin a6af5be0f8357d570eba267d38d55c7527d10949af454ebf2b76925bf39ff46a | the first text of this file created the same objects without recording them; its revert keeps what it cannot attribute
-- x402:supersedes: aee2fa890d5d4415064cd1f22e0a35a02bce6a3ec98fbb00481257150ac099ac pin a6af5be0f8357d570eba267d38d55c7527d10949af454ebf2b76925bf39ff46a | the same text before its supersedes lines pinned it; a database that applied it is left as it was
-- x402:supersedes: d840a8dc53d5c6614f317dcfbfafdda0537da9d155ea685eba1f08da4323b726 pin a6af5be0f8357d570eba267d38d55c7527d10949af454ebf2b76925bf39ff46a | the text before it recorded the default privileges it grants; its revert revokes none of them, keeps the roles they name, and says so

-- What this layer creates is recorded, so that its revert drops exactly that and nothing it
-- found existing (roles are cluster-wide; another database or project may own them).
CREATE TABLE IF NOT EXISTS x402_private.compat_objects (
  kind       text NOT NULL CHECK (kind IN ('role', 'schema', 'table', 'function', 'default_acl')),
  identity   text NOT NULL,
  object_oid oid,
  PRIMARY KEY (kind, identity)
);
REVOKE ALL ON x402_private.compat_objects FROM PUBLIC;
-- The table outlives a revert, so one an earlier bundle created still has its narrower CHECK:
-- replaced in this transaction by a wider one, on a table only this layer writes.
-- squawk-ignore ban-drop-constraint
ALTER TABLE x402_private.compat_objects DROP CONSTRAINT IF EXISTS compat_objects_kind_check;
ALTER TABLE x402_private.compat_objects ADD CONSTRAINT compat_objects_kind_check
  CHECK (kind IN ('role', 'schema', 'table', 'function', 'default_acl'));
-- The OID of what was created: an object of the same name made since by someone else is theirs.
ALTER TABLE x402_private.compat_objects ADD COLUMN IF NOT EXISTS object_oid oid;

DO $$
DECLARE
  r text;
BEGIN
  -- A record kept by an earlier revert (the object was in use) whose object was dropped or
  -- re-created since: what has the name now is not the layer's.
  DELETE FROM x402_private.compat_objects c
  WHERE c.object_oid IS NOT NULL AND c.object_oid IS DISTINCT FROM CASE c.kind
    WHEN 'role' THEN (SELECT oid FROM pg_roles WHERE rolname = c.identity)
    WHEN 'schema' THEN to_regnamespace(c.identity)::oid
    WHEN 'table' THEN to_regclass(c.identity)::oid
    WHEN 'function' THEN to_regprocedure(c.identity)::oid END;
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'authenticator'] LOOP
    CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
    EXECUTE format('CREATE ROLE %I %s', r, CASE r
      WHEN 'service_role' THEN 'NOLOGIN NOINHERIT BYPASSRLS'
      WHEN 'authenticator' THEN 'LOGIN NOINHERIT'
      ELSE 'NOLOGIN NOINHERIT' END);
    INSERT INTO x402_private.compat_objects VALUES ('role', r) ON CONFLICT DO NOTHING;
  END LOOP;
  IF to_regnamespace('auth') IS NULL THEN
    INSERT INTO x402_private.compat_objects VALUES ('schema', 'auth') ON CONFLICT DO NOTHING;
  END IF;
  IF to_regclass('auth.users') IS NULL THEN
    INSERT INTO x402_private.compat_objects VALUES ('table', 'auth.users') ON CONFLICT DO NOTHING;
  END IF;
  FOREACH r IN ARRAY ARRAY['auth.uid()', 'auth.role()', 'auth.jwt()'] LOOP
    IF to_regnamespace('auth') IS NULL OR to_regprocedure(r) IS NULL THEN
      INSERT INTO x402_private.compat_objects VALUES ('function', r) ON CONFLICT DO NOTHING;
    END IF;
  END LOOP;
END
$$;

GRANT anon, authenticated, service_role TO authenticator;

CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE IF NOT EXISTS auth.users (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email              text,
  raw_app_meta_data  jsonb,
  raw_user_meta_data jsonb,
  created_at         timestamptz DEFAULT now(),
  updated_at         timestamptz DEFAULT now()
);

-- Same bodies as Supabase's auth functions: the legacy per-claim setting wins when set,
-- PostgREST >= 9 only sets request.jwt.claims. Each is created where it is missing, or replaced
-- where the layer created it; one the layer found is the operator's and is left as it is.
DO $do$
DECLARE
  f record;
BEGIN
  FOR f IN SELECT * FROM (VALUES
    ('auth.uid()', $ddl$CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
  LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$
$ddl$),
    ('auth.role()', $ddl$CREATE OR REPLACE FUNCTION auth.role() RETURNS text
  LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$
$ddl$),
    ('auth.jwt()', $ddl$CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
  LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$
$ddl$)
  ) v (identity, ddl) LOOP
    CONTINUE WHEN to_regprocedure(f.identity) IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM x402_private.compat_objects WHERE kind = 'function' AND identity = f.identity);
    EXECUTE f.ddl;
  END LOOP;
END
$do$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;
GRANT ALL ON auth.users TO service_role;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- Supabase's default privileges: every new table, sequence and function in public is granted
-- to the three API roles. This is why migration 005's access model must revoke anon explicitly.
-- Each privilege this adds to the running role's defaults (not one that was there already) is
-- recorded with that role, so that the revert revokes exactly those: an operator's own entries,
-- made before this ran or by another role, are never touched. Roles are recorded by OID too: a
-- role renamed since is still found, one dropped and re-created under the name is not ours.
DO $$
DECLARE
  t record;
  me oid := (SELECT oid FROM pg_roles WHERE rolname = current_user);
  before text[];
BEGIN
  FOR t IN SELECT * FROM (VALUES ('r', 'TABLES'), ('S', 'SEQUENCES'), ('f', 'FUNCTIONS')) v (objtype, keyword) LOOP
    SELECT coalesce(array_agg(a.grantee::text || ':' || a.privilege_type), '{}') INTO before
    FROM pg_default_acl d, aclexplode(d.defaclacl) a
    WHERE d.defaclrole = me AND d.defaclnamespace = 'public'::regnamespace AND d.defaclobjtype = t.objtype::"char";
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON %s TO anon, authenticated, service_role', t.keyword);
    INSERT INTO x402_private.compat_objects
    SELECT 'default_acl', jsonb_build_object('role', current_user::text, 'role_oid', me::bigint, 'schema', 'public',
                                             'on', t.keyword, 'privilege', a.privilege_type,
                                             'to', g.rolname::text, 'to_oid', g.oid::bigint)::text
    FROM pg_default_acl d, aclexplode(d.defaclacl) a, pg_roles g
    WHERE d.defaclrole = me AND d.defaclnamespace = 'public'::regnamespace AND d.defaclobjtype = t.objtype::"char"
      AND g.oid = a.grantee AND g.rolname IN ('anon', 'authenticated', 'service_role')
      AND NOT (a.grantee::text || ':' || a.privilege_type = ANY (before))
    ON CONFLICT DO NOTHING;
  END LOOP;
END
$$;

-- What this run created, by OID (and what an earlier release recorded without one).
UPDATE x402_private.compat_objects c SET object_oid = CASE c.kind
    WHEN 'role' THEN (SELECT oid FROM pg_roles WHERE rolname = c.identity)
    WHEN 'schema' THEN to_regnamespace(c.identity)::oid
    WHEN 'table' THEN to_regclass(c.identity)::oid
    WHEN 'function' THEN to_regprocedure(c.identity)::oid END
WHERE c.object_oid IS NULL AND c.kind <> 'default_acl';
