// Turns the values of _config into the text the rules and dashboards hold, and refuses a value
// that would make a rule that loads but never matches (or does not load): each error names the
// key and the value.
local fail(name, value, what) =
  error 'kube-netprobe mixin: _config.%s: %s is not %s' % [name, std.manifestJsonEx(value, ''), what];

// The shortest decimal text that reads back as exactly this number (std.toString would write
// 0.1 as 0.10000000000000001, the same number but not the text alerts/*.yaml holds).
local decimal(x) =
  local fixed(k) =
    local s = std.format('%.' + k + 'f', x);
    if std.parseJson(s) == x then s else if k < 20 then fixed(k + 1) else std.toString(x);
  fixed(0);

local isNumberText(s) =
  local digits(t) = t != '' && std.lstripChars(t, '0123456789') == '';
  local parts = std.split(if std.startsWith(s, '-') then s[1:] else s, '.');
  std.length(parts) <= 2 && std.length(std.filter(digits, parts)) == std.length(parts);

{
  // A threshold: a number, or a string that is a plain decimal number (written as given).
  number(name, value)::
    if std.isNumber(value) then decimal(value)
    else if std.isString(value) && isNumberText(value) then value
    else fail(name, value, 'a number'),

  // A Prometheus duration such as 5m or 1h30m.
  duration(name, value)::
    // Digits and a unit, repeated; ms before m, so 5ms is five milliseconds.
    local units = ['ms', 's', 'm', 'h', 'd', 'w', 'y'];
    local valid(s) =
      s == '' || (
        local after = std.lstripChars(s, '0123456789');
        local unit = [u for u in units if std.startsWith(after, u)];
        std.length(after) < std.length(s) && unit != [] && valid(after[std.length(unit[0]):])
      );
    if std.isString(value) && value != '' && valid(value) then value
    else fail(name, value, 'a Prometheus duration (5m, 1h30m)'),

  // Text inside a PromQL "..." string (a regex, as written: a backslash written twice).
  inString(name, value)::
    if std.isString(value) && std.length(std.findSubstr('"', value)) == 0 then value
    else fail(name, value, 'a string without a double quote (it goes inside a PromQL "...")'),

  // One of a fixed list of texts (a number is taken as its shortest decimal: 1.0 reads as 1).
  oneOf(name, value, allowed)::
    local text = if std.isNumber(value) then decimal(value) else value;
    if std.isString(text) && std.member(allowed, text) then text
    else fail(name, value, 'one of %s (quote it: "1.0", not 1.0)' % std.join(', ', allowed)),

  // Label matchers, as they go between the braces of a selector.
  selector(name, value)::
    if std.isString(value) && std.length(std.findSubstr('{', value) + std.findSubstr('}', value)) == 0 then value
    else fail(name, value, 'a list of label matchers without braces, such as job="kube-netprobe"'),
}
