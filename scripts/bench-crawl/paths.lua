-- wrk script of scripts/bench-crawl.sh: requests the generated site's pages
-- round-robin, one path per line of the file given after `--`.
local paths = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
