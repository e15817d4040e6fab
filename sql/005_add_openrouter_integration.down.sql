-- Reverts 005 in reverse order and restores the five-type constraint. Business rows are never
-- dropped silently: the engine evaluates these guards before touching anything.
-- x402:lock: public.user_openrouter_integrations, public.x402_resources
-- x402:guard data-loss: SELECT count(*) FROM public.user_openrouter_integrations | row(s) in user_openrouter_integrations (encrypted OpenRouter keys) would be dropped
-- x402:guard data-loss: SELECT count(*) FROM public.x402_resources WHERE openrouter_model_id IS NOT NULL OR openrouter_config IS NOT NULL | x402_resources row(s) with openrouter_model_id or openrouter_config set would lose those values
-- x402:guard always: SELECT count(*) FROM public.x402_resources WHERE resource_type = 'openrouter_instant' | x402_resources row(s) have resource_type 'openrouter_instant', which the old constraint rejects; delete them or convert them to another type first

DROP INDEX IF EXISTS public.idx_x402_resources_openrouter_model;

ALTER TABLE public.x402_resources
  DROP CONSTRAINT IF EXISTS x402_resources_resource_type_check;
ALTER TABLE public.x402_resources
  ADD CONSTRAINT x402_resources_resource_type_check
  CHECK (resource_type IN ('external', 'proxy', 'prompt', 'static', 'prompt_template'))
  NOT VALID;

ALTER TABLE public.x402_resources
  DROP CONSTRAINT IF EXISTS x402_resources_openrouter_model_id_fkey;
ALTER TABLE public.x402_resources
  DROP COLUMN IF EXISTS openrouter_config,
  DROP COLUMN IF EXISTS openrouter_model_id;

DROP TABLE IF EXISTS public.user_openrouter_integrations;
DROP FUNCTION IF EXISTS public.update_openrouter_integration_updated_at();

-- x402:no-transaction
ALTER TABLE public.x402_resources VALIDATE CONSTRAINT x402_resources_resource_type_check;
