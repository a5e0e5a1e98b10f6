const api = require('./utils/api')

App({
  // wx.login -> POST /api/v1/auth/wechat {code} -> token in storage (utils/api.js), refreshed a
  // day before it expires. Silent: the citizen never has to identify themself to rate or report.
  onLaunch() {
    api.ensureSession().catch(() => {
      // No network yet: the first API call logs in again.
    })
  }
})
