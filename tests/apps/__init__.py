"""Small applications that tests run in worker subprocesses."""
