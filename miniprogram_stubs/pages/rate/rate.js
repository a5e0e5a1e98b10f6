// 好差评: five levels (GB/T 39735-2020), optional sub-scores and the MOT inspection questions.
// Keys match the API (api/texts.py: DIMENSIONS, QUESTIONS). Level ≤ 2 opens a follow-up case.
const api = require('../../utils/api')

const LEVELS = [
  { value: 5, label: '非常满意' },
  { value: 4, label: '满意' },
  { value: 3, label: '基本满意' },
  { value: 2, label: '不满意' },
  { value: 1, label: '非常不满意' }
]
const DIMENSIONS = [
  { key: 'standard', label: '规范', hint: '出示证件、告知权利、程序规范' },
  { key: 'civility', label: '文明', hint: '态度、用语' },
  { key: 'fairness', label: '公正', hint: '' },
  { key: 'integrity', label: '廉洁', hint: '' },
  { key: 'efficiency', label: '效率', hint: '' }
]
const QUESTIONS = [
  { key: 'showed_id', label: '出示执法证件了吗' },
  { key: 'informed_rights', label: '告知权利义务了吗' },
  { key: 'two_officers', label: '现场执法人员不少于两人吗' },
  { key: 'bodycam', label: '使用执法记录仪了吗' }
]

Page({
  data: {
    code: '',
    encounter: '', // one-time code: the rating is marked as a verified encounter
    levels: LEVELS,
    dimensions: DIMENSIONS,
    questions: QUESTIONS,
    scores: [1, 2, 3, 4, 5],
    level: 0,
    picked: {}, // dimension key -> 1..5
    answers: {}, // question key -> true/false
    comment: '',
    submitting: false
  },

  onLoad(options) {
    this.submission = api.submission() // one rating, one Idempotency-Key, however often sent
    this.setData({
      code: (options.code || '').toUpperCase(),
      encounter: options.e ? decodeURIComponent(options.e) : ''
    })
  },

  pickLevel(event) {
    this.setData({ level: Number(event.currentTarget.dataset.value) })
  },

  // Sub-scores are optional: tapping the chosen score again clears it.
  pickScore(event) {
    const { key, score } = event.currentTarget.dataset
    const current = this.data.picked[key]
    this.setData({ [`picked.${key}`]: current === score ? null : score })
  },

  answer(event) {
    const { key, value } = event.currentTarget.dataset
    const current = this.data.answers[key]
    this.setData({ [`answers.${key}`]: current === value ? null : value })
  },

  onComment(event) {
    this.setData({ comment: event.detail.value })
  },

  compact(object) {
    const out = {}
    Object.keys(object).forEach((k) => {
      if (object[k] !== undefined && object[k] !== null) out[k] = object[k]
    })
    return out
  },

  async submit() {
    if (!this.data.level) {
      wx.showToast({ title: '请选择满意程度', icon: 'none' })
      return
    }
    this.setData({ submitting: true })
    try {
      const result = await api.rate(this.data.code, {
        level: this.data.level,
        dimensions: this.compact(this.data.picked),
        answers: this.compact(this.data.answers),
        comment: this.data.comment.trim(),
        encounter_code: this.data.encounter
      }, this.submission)
      this.done(result)
    } catch (e) {
      if (String(e.code).startsWith('encounter_code_')) {
        // Expired, used or not this officer's: nothing was stored; rate again without the code.
        this.setData({ encounter: '' })
        wx.showModal({ title: '现场评价码不可用', content: e.message, confirmText: '直接评价', success: (res) => res.confirm && this.submit() })
        return
      }
      api.showError(e)
    } finally {
      this.setData({ submitting: false })
    }
  },

  done(result) {
    if (!result.ticket_no) {
      wx.showToast({ title: '感谢您的评价', icon: 'success' })
      setTimeout(() => wx.navigateBack(), 1200)
      return
    }
    wx.showModal({
      title: '已收到您的评价',
      content: `我们将回访核实并整改反馈，案件编号 ${result.ticket_no}。`,
      confirmText: '查看进度',
      cancelText: '返回',
      success: (res) => {
        if (res.confirm) wx.redirectTo({ url: `/pages/track/detail?ticket=${result.ticket_no}` })
        else wx.navigateBack()
      }
    })
  }
})
