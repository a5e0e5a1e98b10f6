// Reached by scanning the card's QR: https://<host>/c/{code} opens this page through
// 扫普通链接二维码打开小程序, with the whole URL URL-encoded in options.q (see README.md).
const api = require('../../utils/api')
const { extractCardCode, extractEncounterCode } = require('../../utils/format')

Page({
  data: {
    code: '',
    encounter: '', // the one-time code of an officer's dynamic QR (a verified encounter)
    card: null,
    loading: false,
    problem: '' // card_not_found | card_revoked | no_code | other
  },

  onLoad(options) {
    this.setData({ encounter: extractEncounterCode(options) })
    this.open(extractCardCode(options))
  },

  onPullDownRefresh() {
    this.open(this.data.code).then(() => wx.stopPullDownRefresh())
  },

  async open(code) {
    if (!code) {
      this.setData({ problem: 'no_code', card: null })
      return
    }
    this.setData({ code, loading: true, problem: '' })
    try {
      const card = await api.getCard(code, this.data.encounter)
      // An expired or used code is dropped: the citizen rates without it.
      if (card.encounter && !card.encounter.valid) this.setData({ encounter: '' })
      this.setData({ card })
    } catch (e) {
      const known = e.code === 'card_not_found' || e.code === 'card_revoked'
      this.setData({ card: null, problem: known ? e.code : 'other', message: e.message })
      if (!known) api.showError(e)
    } finally {
      this.setData({ loading: false })
    }
  },

  // Opened without a code (e.g. from 最近使用): let the citizen scan the card from here.
  scan() {
    wx.scanCode({
      onlyFromCamera: false,
      scanType: ['qrCode'],
      success: (res) => {
        const code = extractCardCode({ url: res.result })
        this.setData({ encounter: extractEncounterCode({ url: res.result }) })
        if (code) this.open(code)
        else wx.showToast({ title: '这不是执法评议卡二维码', icon: 'none' })
      }
    })
  },

  call(event) {
    wx.makePhoneCall({ phoneNumber: event.currentTarget.dataset.phone })
  },

  goRate() {
    const e = this.data.encounter ? `&e=${encodeURIComponent(this.data.encounter)}` : ''
    wx.navigateTo({ url: `/pages/rate/rate?code=${this.data.code}${e}` })
  },

  goReport() {
    wx.navigateTo({ url: `/pages/report/report?code=${this.data.code}` })
  },

  goTrack() {
    wx.navigateTo({ url: '/pages/track/track' })
  }
})
