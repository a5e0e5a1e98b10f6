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
  tokenKey: 'pingyi_token'
}
