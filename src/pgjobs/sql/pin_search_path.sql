-- Pin the search path of procrastinate's functions and triggers, and of
-- pgjobs' trigger on them, so a job sent on a caller's own connection (whose
-- search_path is its own) still reaches the tables of this schema. pgjobs'
-- other functions are left alone: a pinned SQL function cannot be inlined.
DO $pin$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure
          FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace
           AND (p.proname LIKE 'procrastinate\_%'
                OR p.proname = 'pgjobs_skip_stale_tick_v1')
    LOOP
        EXECUTE format(
            'ALTER FUNCTION %s SET search_path = pg_catalog, %I',
            fn, current_schema()
        );
    END LOOP;
END
$pin$;
