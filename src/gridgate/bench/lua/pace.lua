-- Pacing for the half-load runs (wrk2 is not available): every connection waits a random
-- 0 .. 2 × GRIDGATE_BENCH_PACE_MS ms before each request, so the load is set by the rate, not
-- by how fast the server answers. wrk starts its latency clock after the wait.
local pace_ms = tonumber(os.getenv("GRIDGATE_BENCH_PACE_MS") or "0")
math.randomseed(os.time())

function delay()
  return math.random(0, 2 * pace_ms)
end
