-- procrastinate's cancel: a waiting job becomes 'cancelled'; a running one
-- gets abort_requested, which its worker picks up by notification or by
-- polling, and answers by cancelling the handler's task.
SELECT procrastinate_cancel_job_v1(%(job_id)s, true, false) AS id
