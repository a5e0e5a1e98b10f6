// The API speaks ISO 8601 in +08:00 (China time): showing it is a matter of cutting the string,
// which avoids Date parsing differences between iOS and Android.
function formatTime(iso) {
  if (!iso) return ''
  return String(iso).slice(0, 16).replace('T', ' ')
}

function pad(n) {
  return n < 10 ? '0' + n : String(n)
}

// "2025-05-01" + "10:30" -> "2025-05-01T10:30:00+08:00" (the API refuses naive times).
function toChinaIso(date, time) {
  if (!date) return null
  return `${date}T${time || '00:00'}:00+08:00`
}

function today() {
  // China time regardless of the phone's time zone.
  const d = new Date(Date.now() + 8 * 3600 * 1000)
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`
}

// The card code from what opened the page: the scanned URL https://<host>/c/{code} arrives
// URL-encoded in options.q (扫普通链接二维码打开小程序); a result of wx.scanCode is the bare URL;
// internal navigation passes options.code.
function extractCardCode(options) {
  const opts = options || {}
  if (opts.code) return String(opts.code).trim().toUpperCase()
  const raw = opts.q ? decodeURIComponent(opts.q) : opts.url || ''
  const match = /\/c\/([0-9A-Za-z]+)(?:[/?#]|$)/.exec(raw)
  return match ? match[1].toUpperCase() : ''
}

// The one-time encounter code of an officer's dynamic QR: https://<host>/c/{code}?e={encounter}.
function extractEncounterCode(options) {
  const opts = options || {}
  if (opts.e) return String(opts.e).trim()
  const raw = opts.q ? decodeURIComponent(opts.q) : opts.url || ''
  const match = /[?&]e=([0-9A-Za-z-]+)/.exec(raw)
  return match ? match[1] : ''
}

module.exports = { formatTime, toChinaIso, today, extractCardCode, extractEncounterCode }
