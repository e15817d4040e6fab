-- Baseline prerequisites of migration 005: the two x402-jobs tables it extends, as they stand
-- before 005 (migrations 001-004 in production). Applied only on target "postgres" and only when
-- both tables are absent; when both exist they are adopted (recorded, never touched or dropped).
-- x402:targets: postgres
-- x402:adopt-if: to_regclass('public.ai_models') IS NOT NULL AND to_regclass('public.x402_resources') IS NOT NULL
-- x402:require: to_regclass('public.ai_models') IS NULL AND to_regclass('public.x402_resources') IS NULL | only one of public.ai_models and public.x402_resources exists; create the missing one by hand or drop the other before deploying
-- x402:require: to_regclass('auth.users') IS NOT NULL | auth.users is missing; the platform compatibility migration must run first

CREATE TABLE public.ai_models (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug           text NOT NULL UNIQUE,
  display_name   text NOT NULL,
  provider       text,
  context_length bigint,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.x402_resources (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id       uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  resource_type text NOT NULL
    CONSTRAINT x402_resources_resource_type_check
    CHECK (resource_type IN ('external', 'proxy', 'prompt', 'static', 'prompt_template')),
  name          text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX x402_resources_user_id_idx ON public.x402_resources (user_id);
