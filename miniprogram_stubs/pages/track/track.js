// The citizen's own cases (complaints and 差评 follow-ups), tracked through their session only:
// anonymous reports included, since no staff role can see who filed them.
const api = require('../../utils/api')
const { formatTime } = require('../../utils/format')

Page({
  data: {
    cases: [],
    loaded: false
  },

  onShow() {
    this.load()
  },

  onPullDownRefresh() {
    this.load().then(() => wx.stopPullDownRefresh())
  },

  async load() {
    try {
      const data = await api.myComplaints()
      const items = Array.isArray(data) ? data : data.items || []
      this.setData({
        cases: items.map((c) => ({ ...c, received: formatTime(c.received_at) })),
        loaded: true
      })
    } catch (e) {
      this.setData({ loaded: true })
      api.showError(e)
    }
  },

  open(event) {
    wx.navigateTo({ url: `/pages/track/detail?ticket=${event.currentTarget.dataset.ticket}` })
  }
})
