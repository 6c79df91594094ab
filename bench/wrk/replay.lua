-- wrk script: replays pre-generated signed deliveries (bench/gen.js).
--
--   wrk -t1 -c16 -d5s --latency -s bench/wrk/replay.lua URL -- FILE FIRST LAST MODE [LABEL]
--
-- FILE has one delivery per line, "<hex signature> <raw JSON body>".
-- init() reads lines FIRST..LAST (1-based, inclusive) and builds the full
-- HTTP/1.1 POST for each one up front, so request() only hands out a
-- ready string.  MODE:
--   cycle  wrap around at the end (for targets where uniqueness does
--          not matter, e.g. nginx's own "return 200")
--   stop   send each delivery at most once; when all are used the thread
--          stops, and done() computes the rate over the time actually
--          spent (wrk itself would divide by the whole -d duration)
-- done() prints one machine-readable line:
--   RESULT label=.. requests=.. rps=.. p50_us=.. p99_us=.. mean_us=..
--          non2xx=.. socket_errors=.. wrapped=.. exhausted=.. elapsed_s=..

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } mw_timespec;
int clock_gettime(int clk, mw_timespec *ts);
]]
local ts = ffi.new("mw_timespec")
local function now_us()
    ffi.C.clock_gettime(1, ts)   -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

local reqs, n, i = {}, 0, 0
local mode = "cycle"
local filler

-- globals read back by done() through thread:get()
wrapped, exhausted, started_us, stopped_us, loaded, label = 0, 0, 0, 0, 0, ""

function init(args)
    local file = args[1] or error("replay.lua: no request file")
    local first = tonumber(args[2] or 1)
    local last = tonumber(args[3] or 1e12)
    mode = args[4] or "cycle"
    label = args[5] or ""
    local host = wrk.host .. ":" .. tostring(wrk.port or 80)
    local path = wrk.path ~= "" and wrk.path or "/"
    local head = "POST " .. path .. " HTTP/1.1\r\nHost: " .. host ..
                 "\r\nUser-Agent: facebookexternalua\r\nAccept: */*" ..
                 "\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256="
    local f = assert(io.open(file, "rb"))
    local ln = 0
    for line in f:lines() do
        ln = ln + 1
        if ln > last then break end
        if ln >= first then
            local sp = line:find(" ", 1, true)
            local body = line:sub(sp + 1)
            n = n + 1
            reqs[n] = head .. line:sub(1, sp - 1) .. "\r\nContent-Length: " ..
                      #body .. "\r\n\r\n" .. body
        end
    end
    f:close()
    if n == 0 then error("replay.lua: no requests in " .. file) end
    loaded = n
    -- sent once the deliveries are used up in "stop" mode: a harmless GET
    -- (handshake with a wrong token) instead of a duplicate delivery
    filler = "GET " .. path .. "?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1" ..
             " HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
    -- wrk calls request() once before the run to validate the script's
    -- output; i = -1 makes that call re-use request 1 instead of using it up
    i = -1
end

function request()
    if i < 0 then
        i = 0
        return reqs[1]
    end
    if started_us == 0 then started_us = now_us() end
    i = i + 1
    if i > n then
        if mode == "stop" then
            if exhausted == 0 then
                exhausted = 1
                stopped_us = now_us()
                wrk.thread:stop()
            end
            return filler
        end
        i = 1
        wrapped = wrapped + 1
    end
    return reqs[i]
end

function done(summary, latency, requests)
    local t = threads[1]
    local elapsed = summary.duration / 1e6
    local ex, wr, lbl = 0, 0, ""
    local ld = 0
    for _, th in ipairs(threads) do
        wr = wr + (th:get("wrapped") or 0)
        lbl = th:get("label") or ""
        ld = ld + (th:get("loaded") or 0)
        if (th:get("exhausted") or 0) == 1 then
            ex = 1
            local s, e = th:get("started_us"), th:get("stopped_us")
            if s and e and e > s then elapsed = (e - s) / 1e6 end
        end
    end
    local e = summary.errors
    io.write(string.format(
        "RESULT label=%s requests=%d rps=%.0f p50_us=%.0f p99_us=%.0f mean_us=%.0f " ..
        "max_us=%.0f non2xx=%d socket_errors=%d wrapped=%d exhausted=%d loaded=%d elapsed_s=%.3f\n",
        lbl, summary.requests, summary.requests / elapsed,
        latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
        e.status, e.connect + e.read + e.write + e.timeout, wr, ex, ld, elapsed))
end
