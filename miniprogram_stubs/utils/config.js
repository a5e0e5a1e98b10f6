// Where the API lives, per mini-program version. Every host here must be listed as a
// "request 合法域名" (HTTPS, ICP-filed) in the mini-program admin console, except in the
// developer tools with "不校验合法域名" ticked.
const BASE_URLS = {
  develop: 'http://127.0.0.1:8000',
  trial: 'https://pingyi-test.example.gov.cn',
  release: 'https://pingyi.example.gov.cn'
}

function envVersion() {
  try {
    return wx.getAccountInfoSync().miniProgram.envVersion || 'release'
  } catch (e) {
    return 'release'
  }
}

module.exports = {
  baseUrl: BASE_URLS[envVersion()] || BASE_URLS.release,
  timeout: 10000,
  tokenKey: 'pingyi_token',
  tokenExpiryKey: 'pingyi_token_expires_at', // ms since the epoch, on this phone's clock
  refreshBeforeMs: 24 * 3600 * 1000, // refresh a token with less than a day left (it lasts 7)
  retries: 2, // a submission is sent at most 3 times by itself, always with the same key
  retryDelayMs: 1000 // then 2000: a weak signal gets a moment to come back
}
