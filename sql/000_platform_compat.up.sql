-- Platform compatibility: what Supabase provides and plain PostgreSQL lacks.
-- Applied only on target "postgres", so that a local database behaves like production.
-- This file is the single owner of the platform roles on that target (the Pulumi program
-- creates none of them), so `make deploy` and `pulumi up` build the same cluster.
-- x402:targets: postgres
-- x402:supersedes: 1f5590331f6dc415852d7e6cf44bd03598a5d3c7191a1f99c65e31d484addc5a pin 0543f3e7d55973820391ff9196061144094d649b5025451293585dc675062d0c | the first text of this file created the same objects without recording them; its revert keeps what it cannot attribute
-- x402:supersedes: aee2fa890d5d4415064cd1f22e0a35a02bce6a3ec98fbb00481257150ac099ac pin 0543f3e7d55973820391ff9196061144094d649b5025451293585dc675062d0c | the same text before its supersedes lines pinned it; a database that applied it is left as it was

-- What this layer creates is recorded, so that its revert drops exactly that and nothing it
-- found existing (roles are cluster-wide; another database or project may own them).
CREATE TABLE IF NOT EXISTS x402_private.compat_objects (
  kind     text NOT NULL CHECK (kind IN ('role', 'schema', 'table', 'function')),
  identity text NOT NULL,
  PRIMARY KEY (kind, identity)
);
REVOKE ALL ON x402_private.compat_objects FROM PUBLIC;

DO $$
DECLARE
  r text;
BEGIN
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
-- PostgREST >= 9 only sets request.jwt.claims.
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
  LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
  LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
  LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;
GRANT ALL ON auth.users TO service_role;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- Supabase's default privileges: every new table, sequence and function in public is granted
-- to the three API roles. This is why migration 005's access model must revoke anon explicitly.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
