"""Drift made by hand on a deployed database, one statement per kind, and the line the derived
comparison must report for it: shared by the comparison's own tests and the real engine's."""

from __future__ import annotations

KEYS = "public.user_openrouter_integrations"
FUNCTION = "public.update_openrouter_integration_updated_at()"
TRIGGER = f"{KEYS}.update_openrouter_integration_updated_at"
USERS_POLICY = '"Users can manage their own OpenRouter integration"'
SERVICE_POLICY = '"Service role full access"'
LEAK = """CREATE TABLE IF NOT EXISTS public.leak (k text);
GRANT SELECT ON public.leak TO anon;
CREATE OR REPLACE FUNCTION public.update_openrouter_integration_updated_at()
  RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  INSERT INTO public.leak VALUES (NEW.encrypted_api_key);
  NEW.updated_at := now();
  RETURN NEW;
END
$$;"""
EXTRA_TRIGGER = f"""CREATE FUNCTION public.copy_key() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER copy_key AFTER INSERT ON {KEYS} FOR EACH ROW EXECUTE FUNCTION public.copy_key();"""

# (label, SQL run as the superuser, the start of the line that must be reported). `{owner}` is
# the role that ran the migrations (supabase_admin on target postgres here, postgres on Supabase).
DRIFTS = [
    ("owner", f"ALTER TABLE {KEYS} OWNER TO authenticated", f"005: table {KEYS}: owner is authenticated, expected {{owner}}"),
    ("function rewritten", LEAK, f"005: function {FUNCTION}: body is"),
    ("replica trigger", f"ALTER TABLE {KEYS} ENABLE REPLICA TRIGGER update_openrouter_integration_updated_at", f"005: trigger {TRIGGER}: enabled is replica, expected origin"),
    ("always trigger", f"ALTER TABLE {KEYS} ENABLE ALWAYS TRIGGER update_openrouter_integration_updated_at", f"005: trigger {TRIGGER}: enabled is always, expected origin"),
    ("disabled trigger", f"ALTER TABLE {KEYS} DISABLE TRIGGER update_openrouter_integration_updated_at", f"005: trigger {TRIGGER}: enabled is disabled, expected origin"),
    ("column grant", f"GRANT SELECT (encrypted_api_key) ON {KEYS} TO anon", f"005: column_acl {KEYS}.encrypted_api_key to anon: unexpected, found [SELECT]"),
    ("table grant", f"GRANT SELECT ON {KEYS} TO anon", f"005: table_acl {KEYS} to anon: unexpected, found [SELECT]"),
    ("dropped check", "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_resource_type_check", "005: constraint public.x402_resources.x402_resources_resource_type_check: missing"),
    ("default", f"ALTER TABLE {KEYS} ALTER COLUMN is_enabled SET DEFAULT false", f"005: column {KEYS}.is_enabled: default is false, expected true"),
    ("nullability", f"ALTER TABLE {KEYS} ALTER COLUMN is_valid DROP NOT NULL", f"005: column {KEYS}.is_valid: not null is false, expected true"),
    ("dropped index", "DROP INDEX public.idx_openrouter_integrations_user_enabled", "005: index public.idx_openrouter_integrations_user_enabled: missing"),
    ("invalid index", "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.idx_x402_resources_openrouter_model'::regclass", "005: index public.idx_x402_resources_openrouter_model: valid is false, expected true"),
    ("rls off", f"ALTER TABLE {KEYS} DISABLE ROW LEVEL SECURITY", f"005: table {KEYS}: row security is false, expected true"),
    ("rls forced", f"ALTER TABLE {KEYS} FORCE ROW LEVEL SECURITY", f"005: table {KEYS}: force row security is true, expected false"),
    ("policy using", f"ALTER POLICY {USERS_POLICY} ON {KEYS} USING (true)", f"005: policy {KEYS}.{USERS_POLICY}: using is true, expected (( SELECT auth.uid() AS uid) = user_id)"),
    ("policy roles", f"ALTER POLICY {SERVICE_POLICY} ON {KEYS} TO anon", f"005: policy {KEYS}.{SERVICE_POLICY}: roles is [anon], expected [service_role]"),
    ("comment", f"COMMENT ON COLUMN {KEYS}.encrypted_api_key IS 'plaintext'", f"005: column {KEYS}.encrypted_api_key: comment is plaintext, expected OpenRouter API key"),
    ("search_path reset", f"ALTER FUNCTION {FUNCTION} RESET search_path", f"005: function {FUNCTION}: config is [], expected [search_path=\"\"]"),
    ("security definer", f"ALTER FUNCTION {FUNCTION} SECURITY DEFINER", f"005: function {FUNCTION}: security definer is true, expected false"),
    ("extra policy", f"CREATE POLICY leak ON {KEYS} FOR SELECT TO anon USING (true)", f"005: policy {KEYS}.leak: unexpected"),
    ("extra trigger", EXTRA_TRIGGER, f"005: trigger {KEYS}.copy_key: unexpected"),
    ("fk action", f"ALTER TABLE {KEYS} DROP CONSTRAINT user_openrouter_integrations_user_id_fkey, ADD CONSTRAINT user_openrouter_integrations_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users (id)", f"005: constraint {KEYS}.user_openrouter_integrations_user_id_fkey: on delete is a, expected c"),
]  # fmt: skip
ON_SUPABASE = {"owner", "column grant", "dropped check", "invalid index", "replica trigger", "policy using"}
