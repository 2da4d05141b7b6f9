'use strict';
// One place for the bridge's log lines: `[hookwasm]` first, one line, bounded length, so an
// operator can grep for them and a huge value (a 10 MiB commit message in an error) cannot
// flood GitProxy's log.

/** Longest line the bridge logs, in characters. */
const MAX_LINE = 1000;

/**
 * Shortens `text` to at most `max` characters, saying how much was cut, and folds it onto one line.
 * @param {unknown} text
 * @param {number} max
 */
function clip(text, max) {
  const s = String(text).replace(/\s*[\r\n]+\s*/g, ' ');
  if (s.length <= max) return s;
  const cut = s.length - max;
  return `${s.slice(0, max)}… (${cut} more characters)`;
}

/**
 * A logger writing through `sink` (console by default): `warn` and `error` for problems, `info`
 * for recoveries.
 * @param {{info?: Function, warn?: Function, error?: Function}} [sink]
 */
function createLogger(sink) {
  const out = sink || console;
  const line = (level) => (message) => {
    try {
      const write = typeof out[level] === 'function' ? out[level] : console.log;
      write.call(out, clip(`[hookwasm] ${message}`, MAX_LINE));
    } catch {
      // A broken logger must not turn a log line into an exception in GitProxy.
    }
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

/** A short description of any thrown value, for one log line. */
function describeError(err) {
  try {
    if (err instanceof Error) {
      const cause = err.cause instanceof Error ? `: ${err.cause.code || err.cause.message}` : '';
      return `${err.message}${cause}`;
    }
    return String(err);
  } catch {
    return 'an error that cannot be described';
  }
}

module.exports = { createLogger, clip, describeError, MAX_LINE };
