// A small client for the 评议 API: base URL from config, Bearer token, one JSON error shape
// {"error": {"code", "message", "details"?}}.
// Sessions: the token is refreshed a day before it expires (POST /api/v1/auth/refresh); a 401
// (or a refresh refused) logs in again once, silently, with wx.login.
// Submissions: every POST carries an Idempotency-Key made once per submission and sent again on
// every retry of it (a lost answer, a tap on 提交 again), so the server runs it exactly once.
const config = require('./config')

const ROUTES = {
  login: '/api/v1/auth/wechat',
  refresh: '/api/v1/auth/refresh',
  logout: '/api/v1/auth/logout',
  card: (code) => `/api/v1/cards/${encodeURIComponent(code)}`,
  rate: (code) => `/api/v1/cards/${encodeURIComponent(code)}/evaluations`,
  categories: '/api/v1/misconduct-categories',
  complaints: '/api/v1/complaints',
  myComplaints: '/api/v1/complaints',
  complaint: (ticketNo) => `/api/v1/complaints/${encodeURIComponent(ticketNo)}`,
  feedback: (ticketNo) => `/api/v1/complaints/${encodeURIComponent(ticketNo)}/feedback`,
  subscribeTemplates: '/api/v1/subscriptions/templates',
  subscriptions: '/api/v1/subscriptions'
}

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message)
    this.status = status
    this.code = code
    this.details = details
  }
}

function getToken() {
  return wx.getStorageSync(config.tokenKey) || ''
}

function expiresAt() {
  return Number(wx.getStorageSync(config.tokenExpiryKey)) || 0
}

// {token, expires_in} from login or refresh; expires_in is counted from now, on this phone's clock.
function saveSession(data) {
  const token = data && (data.token || data.access_token)
  if (!token) return clearSession()
  wx.setStorageSync(config.tokenKey, token)
  wx.setStorageSync(config.tokenExpiryKey, Date.now() + Number(data.expires_in || 0) * 1000)
}

function clearSession() {
  wx.removeStorageSync(config.tokenKey)
  wx.removeStorageSync(config.tokenExpiryKey)
}

function toError(res) {
  const error = (res.data && res.data.error) || {}
  const message = error.message || `服务暂时不可用（${res.statusCode}）`
  return new ApiError(res.statusCode, error.code || 'http_' + res.statusCode, message, error.details)
}

function send(method, path, data, withAuth, extraHeader) {
  const header = { 'content-type': 'application/json', ...(extraHeader || {}) }
  const token = withAuth ? getToken() : ''
  if (token) header.Authorization = `Bearer ${token}`
  return new Promise((resolve, reject) => {
    wx.request({
      url: config.baseUrl + path,
      method,
      data,
      header,
      timeout: config.timeout,
      success(res) {
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(res.data)
        else reject(toError(res))
      },
      fail() {
        reject(new ApiError(0, 'network', '网络连接失败，请稍后重试'))
      }
    })
  })
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject(new ApiError(0, 'wx_login', '微信登录失败'))),
      fail: () => reject(new ApiError(0, 'wx_login', '微信登录失败，请重试'))
    })
  })
}

// POST /api/v1/auth/wechat {code} -> {token, expires_in}; no identity beyond the openid is asked.
async function login(code) {
  const data = await send('POST', ROUTES.login, { code }, false)
  saveSession(data)
  return data
}

// Several pages may ask at once: one login (and one refresh) in flight, shared.
function shared(start) {
  let pending = null
  return () => {
    if (!pending) {
      pending = start().then(
        (data) => ((pending = null), data),
        (e) => {
          pending = null
          throw e
        }
      )
    }
    return pending
  }
}

const relogin = shared(() => wxLogin().then(login))

// A new token for the one about to expire. The server keeps the old one valid for a minute and
// answers a retried refresh with the same new token, so a lost answer costs nothing. Refused
// (401: expired or logged out) → log in again; no network → keep the old token while it lasts.
const refresh = shared(async () => {
  try {
    const data = await send('POST', ROUTES.refresh, null, true)
    saveSession(data)
    return data
  } catch (e) {
    if (e.status !== 401) throw e
    clearSession()
    return relogin()
  }
})

async function ensureSession() {
  if (!getToken()) return relogin()
  const left = expiresAt() - Date.now()
  if (left <= 0) {
    clearSession()
    return relogin()
  }
  if (left < config.refreshBeforeMs) {
    await refresh().catch((e) => {
      if (expiresAt() <= Date.now()) throw e
    })
  }
  return null
}

async function call(method, path, data, extraHeader) {
  await ensureSession()
  try {
    return await send(method, path, data, true, extraHeader)
  } catch (e) {
    if (e.status !== 401) throw e
    clearSession()
    await relogin() // once: a second 401 is shown to the user
    return send(method, path, data, true, extraHeader)
  }
}

// Idempotency-Key: 8–64 of [A-Za-z0-9_-]; unique enough per sign-in (the server's scope).
function newIdempotencyKey() {
  const random = () => Math.floor(Math.random() * 0x100000000).toString(36)
  return `mp-${Date.now().toString(36)}-${random()}${random()}${random()}`
}

// One submission (a rating, a report, a feedback …): the same body sent again is the same
// submission and keeps its key; a changed body is a new submission with a new key (the server
// refuses one key for two bodies). Pages keep one per form and call done() after success.
function submission() {
  let last = null
  return {
    key(data) {
      const body = JSON.stringify(data === undefined ? null : data)
      if (!last || last.body !== body) last = { body, key: newIdempotencyKey() }
      return last.key
    },
    done() {
      last = null
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Worth sending again with the same key: no answer (network), the server busy (5xx), or the
// first attempt still running (409 idempotency_in_progress). Anything else is for the page.
function retryable(e) {
  return e.status === 0 || e.status >= 500 || e.code === 'idempotency_in_progress'
}

async function post(path, data, sub) {
  const key = (sub || submission()).key(data)
  const header = { 'Idempotency-Key': key }
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await call('POST', path, data, header)
      if (sub) sub.done()
      return result
    } catch (e) {
      if (!retryable(e) || attempt >= config.retries) throw e
      await sleep(config.retryDelayMs * (attempt + 1))
    }
  }
}

// Ends this sign-in on the server (every token of it), then forgets it here.
async function logout() {
  try {
    if (getToken()) await send('POST', ROUTES.logout, null, true)
  } catch (e) {
    // Already expired or offline: forgetting it here is what matters.
  } finally {
    clearSession()
  }
}

function showError(e) {
  wx.showToast({ title: (e && e.message) || '操作失败，请稍后重试', icon: 'none', duration: 2500 })
}

module.exports = {
  ApiError,
  showError,
  relogin,
  refresh,
  ensureSession,
  login,
  logout,
  submission,
  // With the encounter code of a dynamic QR the answer says whether it is still valid.
  getCard: (code, e) =>
    call('GET', ROUTES.card(code) + (e ? `?e=${encodeURIComponent(e)}` : '')),
  // The last argument of every submission is the page's submission() (optional).
  rate: (code, { level, dimensions, answers, comment, encounter_code }, sub) =>
    post(ROUTES.rate(code), {
      level,
      dimensions: dimensions || {},
      answers: answers || {},
      comment: comment || '',
      encounter_code: encounter_code || null
    }, sub),
  categories: () => call('GET', ROUTES.categories),
  fileComplaint: ({ card_code, categories, description, occurred_at, location, anonymous, phone }, sub) =>
    post(ROUTES.complaints, {
      card_code,
      categories,
      description,
      occurred_at: occurred_at || null,
      location: location || '',
      anonymous: !!anonymous,
      phone: anonymous ? null : phone || null
    }, sub),
  myComplaints: () => call('GET', ROUTES.myComplaints),
  complaint: (ticketNo) => call('GET', ROUTES.complaint(ticketNo)),
  // Not satisfied: a re-check one level up, which needs the citizen's reason.
  feedback: (ticketNo, { satisfied, comment, reason }, sub) =>
    post(ROUTES.feedback(ticketNo), satisfied
      ? { satisfied: true, comment: comment || '' }
      : { satisfied: false, comment: comment || '', reason: reason || '' }, sub),
  subscribeTemplates: () => send('GET', ROUTES.subscribeTemplates, null, false),
  // The template ids wx.requestSubscribeMessage answered 'accept' for: one message each.
  subscribe: (templateIds, ticketNo, sub) =>
    post(ROUTES.subscriptions, { template_ids: templateIds, ticket_no: ticketNo || null }, sub)
}
