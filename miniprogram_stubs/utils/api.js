// A small client for the 评议 API: base URL from config, Bearer token, one JSON error shape
// {"error": {"code", "message", "details"?}}, and one silent re-login when the token expired (401).
const config = require('./config')

const ROUTES = {
  login: '/api/v1/auth/wechat',
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

function setToken(token) {
  if (token) wx.setStorageSync(config.tokenKey, token)
  else wx.removeStorageSync(config.tokenKey)
}

function toError(res) {
  const error = (res.data && res.data.error) || {}
  const message = error.message || `服务暂时不可用（${res.statusCode}）`
  return new ApiError(res.statusCode, error.code || 'http_' + res.statusCode, message, error.details)
}

function send(method, path, data, withAuth) {
  const header = { 'content-type': 'application/json' }
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
  setToken(data.token || data.access_token)
  return data
}

// Several pages may ask at once: share one login in flight.
let loggingIn = null
function relogin() {
  if (!loggingIn) {
    const done = () => {
      loggingIn = null
    }
    loggingIn = wxLogin()
      .then(login)
      .then(
        (data) => (done(), data),
        (e) => {
          done()
          throw e
        }
      )
  }
  return loggingIn
}

async function call(method, path, data) {
  if (!getToken()) await relogin()
  try {
    return await send(method, path, data, true)
  } catch (e) {
    if (e.status !== 401) throw e
    setToken('')
    await relogin() // once: a second 401 is shown to the user
    return send(method, path, data, true)
  }
}

function showError(e) {
  wx.showToast({ title: (e && e.message) || '操作失败，请稍后重试', icon: 'none', duration: 2500 })
}

module.exports = {
  ApiError,
  showError,
  relogin,
  login,
  // With the encounter code of a dynamic QR the answer says whether it is still valid.
  getCard: (code, e) =>
    call('GET', ROUTES.card(code) + (e ? `?e=${encodeURIComponent(e)}` : '')),
  rate: (code, { level, dimensions, answers, comment, encounter_code }) =>
    call('POST', ROUTES.rate(code), {
      level,
      dimensions: dimensions || {},
      answers: answers || {},
      comment: comment || '',
      encounter_code: encounter_code || null
    }),
  categories: () => call('GET', ROUTES.categories),
  fileComplaint: ({ card_code, categories, description, occurred_at, location, anonymous, phone }) =>
    call('POST', ROUTES.complaints, {
      card_code,
      categories,
      description,
      occurred_at: occurred_at || null,
      location: location || '',
      anonymous: !!anonymous,
      phone: anonymous ? null : phone || null
    }),
  myComplaints: () => call('GET', ROUTES.myComplaints),
  complaint: (ticketNo) => call('GET', ROUTES.complaint(ticketNo)),
  // Not satisfied: a re-check one level up, which needs the citizen's reason.
  feedback: (ticketNo, { satisfied, comment, reason }) =>
    call('POST', ROUTES.feedback(ticketNo), satisfied
      ? { satisfied: true, comment: comment || '' }
      : { satisfied: false, comment: comment || '', reason: reason || '' }),
  subscribeTemplates: () => send('GET', ROUTES.subscribeTemplates, null, false),
  // The template ids wx.requestSubscribeMessage answered 'accept' for: one message each.
  subscribe: (templateIds, ticketNo) =>
    call('POST', ROUTES.subscriptions, { template_ids: templateIds, ticket_no: ticketNo || null })
}
