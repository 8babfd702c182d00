-- wrk script for loadtest.sh: POST /predict with one of four mails (two ham, two spam; 0.4 to 3 KB, so some run past
-- the classifier's 512 tokens and are cut), in turn; done() prints one machine-readable RESULT line.
local function mail(from, subject, paragraph, repeats)
  local body = string.rep(paragraph .. "\n\n", repeats)
  return "From: " .. from .. "\nTo: list@example.org\nSubject: " .. subject .. "\nContent-Type: text/plain\n\n" .. body
end

local function json_string(s)
  return '"' .. s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', '\\n') .. '"'
end

local mails = {
  mail("alice@example.org", "Re: build failure on the nightly branch",
    "I looked at the log again and the failing step is the linker, not the compiler. Could you rerun it with the verbose flag and send me the output? I think the library path changed when we upgraded the toolchain last week.", 1),
  mail("deals@cheap-meds.example", "LOWEST PRICES ON ALL MEDS - ORDER NOW!!!",
    "Dear friend, you have been selected for an EXCLUSIVE offer. Get 80% OFF all medications, no prescription needed, shipped discreetly worldwide. CLICK HERE to claim your discount before midnight! Limited stock, act now and save hundreds of dollars.", 6),
  mail("bob@example.org", "Minutes of Tuesday's meeting",
    "Attached are the minutes. We agreed to move the release to the end of the month, Carol will update the roadmap, and the team will review the open bugs on Friday. Please reply if I missed anything or got a decision wrong.", 4),
  mail("winner@lottery-intl.example", "You have WON $1,000,000 USD",
    "Congratulations! Your email address was drawn in our international lottery. To receive your prize of ONE MILLION DOLLARS send your full name, bank account number and a processing fee of $99 to our claims agent today. This offer expires in 48 hours.", 10),
}

local bodies = {}
for i, m in ipairs(mails) do bodies[i] = '{"text": ' .. json_string(m) .. '}' end
local next_body = 0

request = function()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/predict", { ["Content-Type"] = "application/json" }, bodies[next_body])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
