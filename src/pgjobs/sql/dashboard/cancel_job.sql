-- procrastinate's cancel. A waiting job becomes 'cancelled' (abort is false
-- then, so abort_requested stays false). A running job gets abort_requested:
-- its worker learns of it by notification or by polling, and then cancels
-- the handler's task.
SELECT procrastinate_cancel_job_v1(%(job_id)s, %(abort)s, false) AS id
