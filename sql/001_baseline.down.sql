-- x402:lock: public.x402_resources, public.ai_models
-- x402:guard data-loss: SELECT count(*) FROM public.x402_resources | row(s) in x402_resources would be dropped
-- x402:guard data-loss: SELECT count(*) FROM public.ai_models | row(s) in ai_models would be dropped

DROP TABLE IF EXISTS public.x402_resources;
DROP TABLE IF EXISTS public.ai_models;
