from streams.app import run_worker

run_worker()
