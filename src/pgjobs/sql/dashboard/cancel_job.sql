-- procrastinate's cancel: a waiting job becomes 'cancelled'; a running one
-- gets abort_requested, which its worker sees and answers by cancelling the
-- handler and finishing the job as 'aborted'.
SELECT procrastinate_cancel_job_v1(%(job_id)s, true, false) AS id
