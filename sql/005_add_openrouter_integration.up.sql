-- 005_add_openrouter_integration: encrypted per-user OpenRouter API keys, and OpenRouter
-- resources in x402_resources (phase 11, database foundation).
--
-- Lock-safe on a live, large x402_resources: the transactional part only takes brief
-- ACCESS EXCLUSIVE locks for catalog-only changes (new nullable columns, a NOT VALID CHECK),
-- placed last so the lock is held for milliseconds before COMMIT. Scans of existing rows
-- (index build, VALIDATE) run after the marker, each in its own transaction, under locks
-- that do not block writers. The engine sets lock_timeout and statement_timeout and retries
-- a lock timeout with backoff. Every statement is idempotent, so a retry after a partial
-- failure converges.
--
-- The foreign key to ai_models comes after its index: from the moment it exists, each DELETE
-- from ai_models (ON DELETE SET NULL) looks up the rows referencing the deleted model, and
-- without idx_x402_resources_openrouter_model that lookup reads all of x402_resources. So the
-- index is built first, then the key is added NOT VALID (a short transaction of its own), then
-- validated. A row given an openrouter_model_id that ai_models lacks before the key existed
-- makes VALIDATE fail and name it (the backend of phase 11 writes the column only once 005 is
-- applied); fix the row and run up again.
-- x402:require: to_regclass('auth.users') IS NOT NULL | auth.users is missing; on plain PostgreSQL deploy with --target postgres
-- x402:require: to_regclass('public.x402_resources') IS NOT NULL | public.x402_resources is missing; apply the earlier x402-jobs migrations (001-004) first
-- x402:require: to_regclass('public.ai_models') IS NOT NULL | public.ai_models is missing; apply the earlier x402-jobs migrations (001-004) first
-- x402:require: NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c WHERE c.conrelid = to_regclass('public.x402_resources') AND c.contype = 'c' AND c.conname <> 'x402_resources_resource_type_check' AND pg_catalog.strpos(pg_catalog.pg_get_constraintdef(c.oid), '''prompt_template''') > 0) | public.x402_resources lists its resource types in a CHECK named other than x402_resources_resource_type_check, which would still reject 'openrouter_instant' after 005; rename it (ALTER TABLE public.x402_resources RENAME CONSTRAINT <its name> TO x402_resources_resource_type_check) or drop it, then run up again
-- x402:supersedes: bb1c2a4161c40d6e90a3fee9a0ee6cd4e8ce277e07ae00870a82ba71524b5ccc pin 08d85e6f33eac732dd7a3efc74a5c8f03721ee7f90bf6b8e05a3dd41dd70a5f1 | the text before the precondition above; a database that applied it is left as it was
-- x402:supersedes: 2271c55b3ea064bd08f5626086691f6344b9796e6908d38f8e9ae7550922047b pin 08d85e6f33eac732dd7a3efc74a5c8f03721ee7f90bf6b8e05a3dd41dd70a5f1 | the same text before its supersedes lines pinned it; a database that applied it is left as it was
-- x402:supersedes: cc4058366417c3c6ba959650cfcedf11df2c6931f52bfb9c3ac70f519456a5fe pin 08d85e6f33eac732dd7a3efc74a5c8f03721ee7f90bf6b8e05a3dd41dd70a5f1 | the text that added the foreign key in the transaction and built its index last; a database that applied it has the same objects, and one it left steps-pending finishes with these steps
-- x402:supersedes: 34e93cc8cfb0537220de4f53104f3852a42ba23a91f66441b00946f7130922cf pin 08d85e6f33eac732dd7a3efc74a5c8f03721ee7f90bf6b8e05a3dd41dd70a5f1 | the text that locked ai_models inside its foreign key's step; a database that applied it has the same objects, and one it left steps-pending finishes with these steps

CREATE TABLE IF NOT EXISTS public.user_openrouter_integrations (
  user_id           uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
  encrypted_api_key text NOT NULL,
  is_valid          boolean NOT NULL DEFAULT true,
  last_verified_at  timestamptz,
  is_enabled        boolean NOT NULL DEFAULT true,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- An empty search_path stops a caller's objects from shadowing now().
CREATE OR REPLACE FUNCTION public.update_openrouter_integration_updated_at()
  RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = ''
AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER update_openrouter_integration_updated_at
  BEFORE UPDATE ON public.user_openrouter_integrations
  FOR EACH ROW EXECUTE FUNCTION public.update_openrouter_integration_updated_at();

CREATE INDEX IF NOT EXISTS idx_openrouter_integrations_user_enabled
  ON public.user_openrouter_integrations (user_id, is_enabled);

ALTER TABLE public.user_openrouter_integrations ENABLE ROW LEVEL SECURITY;

-- (select auth.uid()) is evaluated once per statement instead of once per row (Supabase advice).
DROP POLICY IF EXISTS "Users can manage their own OpenRouter integration" ON public.user_openrouter_integrations;
CREATE POLICY "Users can manage their own OpenRouter integration"
  ON public.user_openrouter_integrations
  FOR ALL TO authenticated
  USING ((select auth.uid()) = user_id)
  WITH CHECK ((select auth.uid()) = user_id);

DROP POLICY IF EXISTS "Service role full access" ON public.user_openrouter_integrations;
CREATE POLICY "Service role full access"
  ON public.user_openrouter_integrations
  FOR ALL TO service_role
  USING (true)
  WITH CHECK (true);

COMMENT ON TABLE public.user_openrouter_integrations IS
  'Per-user OpenRouter integration: the user''s own API key, stored encrypted. One row per user.';
COMMENT ON COLUMN public.user_openrouter_integrations.user_id IS
  'Owner (auth.users.id); the row is deleted with the user.';
COMMENT ON COLUMN public.user_openrouter_integrations.encrypted_api_key IS
  'OpenRouter API key, AES-256-CBC encrypted, stored as iv_hex:ciphertext_hex (16-byte random IV, lowercase hex); key = SHA-256(INTEGRATION_ENCRYPTION_SECRET). Never plaintext.';
COMMENT ON COLUMN public.user_openrouter_integrations.is_valid IS
  'Whether the key was accepted by OpenRouter at the last verification.';
COMMENT ON COLUMN public.user_openrouter_integrations.last_verified_at IS
  'When the key was last verified against OpenRouter; NULL if never.';
COMMENT ON COLUMN public.user_openrouter_integrations.is_enabled IS
  'Whether the user has the integration switched on.';
COMMENT ON COLUMN public.user_openrouter_integrations.created_at IS
  'When the integration was first saved.';
COMMENT ON COLUMN public.user_openrouter_integrations.updated_at IS
  'When the row last changed; maintained by trigger update_openrouter_integration_updated_at.';

-- x402_resources is live and large: catalog-only changes, last, so the ACCESS EXCLUSIVE lock
-- they take is released at COMMIT right after.
ALTER TABLE public.x402_resources
  ADD COLUMN IF NOT EXISTS openrouter_model_id uuid,
  ADD COLUMN IF NOT EXISTS openrouter_config jsonb;

DO $$
BEGIN
  -- The new set is a superset of the old one, so existing rows satisfy it; NOT VALID skips
  -- the full-table scan under ACCESS EXCLUSIVE, and new writes are checked at once.
  IF NOT EXISTS (
    SELECT 1 FROM pg_constraint
    WHERE conrelid = 'public.x402_resources'::regclass
      AND conname = 'x402_resources_resource_type_check'
      AND pg_get_constraintdef(oid) LIKE '%''openrouter_instant''%'
  ) THEN
    ALTER TABLE public.x402_resources
      DROP CONSTRAINT IF EXISTS x402_resources_resource_type_check;
    ALTER TABLE public.x402_resources
      ADD CONSTRAINT x402_resources_resource_type_check
      CHECK (resource_type IN ('external', 'proxy', 'prompt', 'static', 'prompt_template', 'openrouter_instant'))
      NOT VALID;
  END IF;
END
$$;

COMMENT ON COLUMN public.x402_resources.openrouter_model_id IS
  'For openrouter_instant resources: the ai_models row to call; set NULL if the model is deleted.';
COMMENT ON COLUMN public.x402_resources.openrouter_config IS
  'For openrouter_instant resources: {modelId, systemPrompt, params: {temperature, maxTokens, ...}}.';

-- x402:no-transaction
-- Each runs in its own transaction, in this order: the index that serves the foreign key's
-- lookups, then the key, then the scans that validate. Each is idempotent (IF NOT EXISTS, the
-- catalog test, validating a valid constraint is a no-op), so a re-run after a failure is safe.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_x402_resources_openrouter_model
  ON public.x402_resources (openrouter_model_id)
  WHERE openrouter_model_id IS NOT NULL;
-- Catalog-only (NOT VALID): ShareRowExclusiveLock on both tables for milliseconds, bounded by
-- lock_timeout. The engine runs this step in a transaction that locks ai_models first (a step
-- that adds a foreign key is ordered as the transactional part is), the order an application's
-- DELETE FROM ai_models takes them in once the key exists.
DO $$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_constraint
    WHERE conrelid = 'public.x402_resources'::regclass
      AND conname = 'x402_resources_openrouter_model_id_fkey'
  ) THEN
    ALTER TABLE public.x402_resources
      ADD CONSTRAINT x402_resources_openrouter_model_id_fkey
      FOREIGN KEY (openrouter_model_id) REFERENCES public.ai_models (id) ON DELETE SET NULL
      NOT VALID;
  END IF;
END
$$;
-- squawk-ignore prefer-robust-stmts
ALTER TABLE public.x402_resources VALIDATE CONSTRAINT x402_resources_openrouter_model_id_fkey;
-- squawk-ignore prefer-robust-stmts
ALTER TABLE public.x402_resources VALIDATE CONSTRAINT x402_resources_resource_type_check;
