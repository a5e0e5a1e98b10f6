// Runs the mini-program stub's utils/api.js in Node against the real server: `wx` is replaced by
// a small stand-in that speaks real HTTP (wx.request), keeps storage in memory, answers wx.login
// with the WeChat fake's dev codes, can move this phone's clock and can lose answers (the request
// reaches the server, the answer never reaches the phone, as on a weak signal).
//
//   node harness.js <base-url> <scenario> '<json args>'
//
// Prints one JSON line: {"result": …, "error": …, "log": [every wx.request], "storage": {…}}.
'use strict'
const http = require('http')

const [baseUrl, scenario, rawArgs] = process.argv.slice(2)
const args = JSON.parse(rawArgs || '{}')
const storage = new Map()
const log = []
const losses = [] // {method, path, times}: answers to lose
let offset = 0 // ms added to this phone's clock
let nonce = 0
const realNow = Date.now
Date.now = () => realNow() + offset

function lose(method, path, times) {
  losses.push({ method, path, times })
}

function httpRequest({ url, method, data, header }, done) {
  const target = new URL(url)
  const body = data === undefined || data === null ? '' : JSON.stringify(data)
  const headers = { ...header, 'content-length': Buffer.byteLength(body) }
  const req = http.request(target, { method, headers }, (res) => {
    const chunks = []
    res.on('data', (chunk) => chunks.push(chunk))
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      let parsed = text
      try {
        parsed = JSON.parse(text)
      } catch (e) {
        // not JSON: handed over as text, as wx.request does
      }
      done(null, { statusCode: res.statusCode, data: parsed, header: res.headers })
    })
  })
  req.on('error', (err) => done(err))
  req.end(body)
}

global.wx = {
  getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
  setStorageSync: (key, value) => storage.set(key, value),
  removeStorageSync: (key) => storage.delete(key),
  getAccountInfoSync: () => ({ miniProgram: { envVersion: 'develop' } }),
  login: ({ success }) => success({ code: `dev-${args.user}-${process.pid}x${nonce++}x${realNow()}` }),
  showToast() {},
  request(options) {
    const path = new URL(options.url).pathname
    httpRequest(options, (err, res) => {
      const entry = {
        method: options.method,
        path,
        key: options.header['Idempotency-Key'] || null,
        token: (options.header.Authorization || '').replace(/^Bearer /, ''),
        status: res ? res.statusCode : 0,
        replayed: !!res && res.header['idempotent-replayed'] === 'true',
        lost: false
      }
      const rule = losses.find((r) => r.method === options.method && r.path === path && r.times > 0)
      if (res && rule) {
        rule.times -= 1
        entry.lost = true
      }
      log.push(entry)
      if (err || entry.lost) options.fail({ errMsg: 'request:fail timeout' })
      else options.success(res)
    })
  }
}

const config = require('../../miniprogram_stubs/utils/config')
config.baseUrl = baseUrl
config.retryDelayMs = 20
const api = require('../../miniprogram_stubs/utils/api')

// The server ends the session behind the phone's back (logout elsewhere, an account reset…).
function endSessionOnServer() {
  const token = wx.getStorageSync(config.tokenKey)
  return new Promise((resolve, reject) =>
    httpRequest(
      { url: baseUrl + '/api/v1/auth/logout', method: 'POST', header: { Authorization: `Bearer ${token}` } },
      (err, res) => (err || res.statusCode !== 200 ? reject(err || new Error(res.statusCode)) : resolve())
    )
  )
}

const DAY = 24 * 3600 * 1000
const complaint = (description) => ({
  card_code: args.card,
  categories: ['RUDE'],
  description: description || '执法人员态度恶劣，拒不出示证件。',
  anonymous: false
})

const SCENARIOS = {
  // The answers of a report and of a rating are lost once: the stub sends each again by itself.
  async lost_answers() {
    lose('POST', '/api/v1/complaints', 1)
    lose('POST', `/api/v1/cards/${args.card}/evaluations`, 1)
    const filed = await api.fileComplaint(complaint())
    const rated = await api.rate(args.card, { level: 4 })
    return { ticket_no: filed.ticket_no, rated }
  },
  // Every automatic attempt is lost; the citizen taps 提交 again (same form), then edits it.
  async tap_again() {
    lose('POST', '/api/v1/complaints', 1 + config.retries)
    const sub = api.submission()
    let error = null
    try {
      await api.fileComplaint(complaint(), sub)
    } catch (e) {
      error = e.code
    }
    const again = await api.fileComplaint(complaint(), sub)
    const edited = await api.fileComplaint(complaint('执法人员态度恶劣，还多罚少开。'), sub)
    return { error, again: again.ticket_no, edited: edited.ticket_no }
  },
  // Six and a half days later (a token lasts seven) the next call refreshes first.
  async refresh_before_expiry() {
    await api.myComplaints()
    const first = wx.getStorageSync(config.tokenKey)
    offset += 6.5 * DAY
    await api.myComplaints()
    await api.myComplaints()
    return { first, second: wx.getStorageSync(config.tokenKey) }
  },
  // The server no longer takes the token: a 401 logs in again once and repeats the call.
  async relogin_on_401() {
    await api.myComplaints()
    await endSessionOnServer()
    await api.myComplaints()
    return null
  },
  // The token is due for a refresh but the server refuses it (ended): log in again instead.
  async refresh_refused() {
    await api.myComplaints()
    await endSessionOnServer()
    offset += 6.5 * DAY
    await api.myComplaints()
    return null
  },
  // An expired token (by this phone's clock) is not even tried: a new login.
  async expired() {
    await api.myComplaints()
    offset += 8 * DAY
    await api.myComplaints()
    return null
  },
  async logout() {
    await api.myComplaints()
    const token = wx.getStorageSync(config.tokenKey)
    await api.logout()
    const forgotten = !wx.getStorageSync(config.tokenKey)
    await api.myComplaints()
    return { token, forgotten }
  }
}

SCENARIOS[scenario]()
  .then(
    (result) => ({ result, error: null }),
    (e) => ({ result: null, error: { status: e.status, code: e.code, message: e.message } })
  )
  .then((outcome) => {
    process.stdout.write(JSON.stringify({ ...outcome, log, storage: Object.fromEntries(storage) }) + '\n')
  })
