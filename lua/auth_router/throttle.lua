-- At most one error-log line per interval for a recurring failure (an auth
-- service or a Redis that is down must not flood the log); the next line
-- says how many were held back. Used by flow.lua and redis.lua.

local ngx = ngx

local _M = {}


--- due(state, interval_s) -> held | nil
-- `state`: a table the caller keeps per failing peer (next_at, held). When
-- a line may be written now, answers how many were held back since the
-- last one (0 or more) and starts a new interval; otherwise counts this
-- one as held and answers nil.
function _M.due(state, interval_s)
  local now = ngx.now()
  if now < (state.next_at or 0) then
    state.held = (state.held or 0) + 1
    return nil
  end
  local held = state.held or 0
  state.next_at, state.held = now + interval_s, 0
  return held
end


return _M
