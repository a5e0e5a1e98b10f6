// 投诉举报: categories from the API (《交通行政执法禁令》, 风纪规范), description, when and where,
// optional anonymity. A phone number is asked only to get a reply, never when anonymous.
const api = require('../../utils/api')
const { toChinaIso, today } = require('../../utils/format')

const PHONE = /^1[3-9]\d{9}$/

Page({
  data: {
    code: '',
    categories: [],
    selected: [],
    description: '',
    date: '',
    time: '',
    today: today(),
    location: '',
    anonymous: false,
    phone: '',
    submitting: false
  },

  onLoad(options) {
    // One report, one Idempotency-Key: tapping 提交 again after a lost answer files it once.
    this.submission = api.submission()
    this.setData({ code: (options.code || '').toUpperCase() })
    this.loadCategories()
  },

  async loadCategories() {
    try {
      const data = await api.categories()
      this.setData({ categories: Array.isArray(data) ? data : data.items || [] })
    } catch (e) {
      api.showError(e)
    }
  },

  onCategories(event) {
    this.setData({ selected: event.detail.value })
  },
  onDescription(event) {
    this.setData({ description: event.detail.value })
  },
  onDate(event) {
    this.setData({ date: event.detail.value })
  },
  onTime(event) {
    this.setData({ time: event.detail.value })
  },
  onLocation(event) {
    this.setData({ location: event.detail.value })
  },
  onAnonymous(event) {
    this.setData({ anonymous: event.detail.value })
  },
  onPhone(event) {
    this.setData({ phone: event.detail.value })
  },

  problem() {
    const d = this.data
    if (!d.selected.length) return '请至少选择一类问题'
    if (d.description.trim().length < 5) return '请描述具体情况（至少5个字）'
    if (!d.anonymous && d.phone && !PHONE.test(d.phone)) return '手机号码格式不正确'
    return ''
  },

  async submit() {
    const problem = this.problem()
    if (problem) {
      wx.showToast({ title: problem, icon: 'none' })
      return
    }
    const d = this.data
    this.setData({ submitting: true })
    try {
      const result = await api.fileComplaint({
        card_code: d.code,
        categories: d.selected,
        description: d.description.trim(),
        occurred_at: toChinaIso(d.date, d.time),
        location: d.location.trim(),
        anonymous: d.anonymous,
        phone: d.phone
      }, this.submission)
      wx.redirectTo({ url: `/pages/track/detail?ticket=${result.ticket_no}&new=1` })
    } catch (e) {
      api.showError(e)
    } finally {
      this.setData({ submitting: false })
    }
  }
})
