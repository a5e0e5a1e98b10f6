// One case as its citizen sees it: status, deadlines, the public timeline and, once replied,
// the 满意/不满意 buttons. 不满意 sends the case to 复核 one level up.
const api = require('../../utils/api')
const { formatTime } = require('../../utils/format')

function present(view) {
  return {
    ...view,
    received: formatTime(view.received_at),
    deadlines: (view.deadlines || []).map((d) => ({ ...d, due: formatTime(d.due_at) })),
    timeline: (view.timeline || []).map((e, i) => ({ ...e, key: i, time: formatTime(e.at) }))
  }
}

Page({
  data: {
    ticket: '',
    view: null,
    comment: '',
    sending: false
  },

  onLoad(options) {
    this.feedbackSubmission = api.submission() // the rating of the handling is sent once
    this.setData({ ticket: options.ticket || '' })
    if (options.new) wx.showToast({ title: '已提交', icon: 'success' })
    this.load()
  },

  onPullDownRefresh() {
    this.load().then(() => wx.stopPullDownRefresh())
  },

  async load() {
    try {
      this.setData({ view: present(await api.complaint(this.data.ticket)) })
    } catch (e) {
      api.showError(e)
    }
  },

  // 订阅进度通知: must run in the tap handler (WeChat shows its dialog only on a user gesture).
  // Each accepted template allows one message, on the case's next change (签收, 答复, 复核, 办结).
  async subscribe() {
    try {
      const { template_ids: tmplIds } = await api.subscribeTemplates()
      const answer = await new Promise((resolve, reject) =>
        wx.requestSubscribeMessage({ tmplIds, success: resolve, fail: reject })
      )
      const accepted = tmplIds.filter((id) => answer[id] === 'accept')
      if (accepted.length) {
        await api.subscribe(accepted, this.data.ticket)
        wx.showToast({ title: '已订阅进度通知', icon: 'success' })
      }
    } catch (e) {
      api.showError(e)
    }
  },

  onComment(event) {
    this.setData({ comment: event.detail.value })
  },

  satisfied() {
    this.send(true)
  },

  unsatisfied() {
    if (!this.data.comment.trim()) {
      wx.showToast({ title: '请先写明不满意的理由', icon: 'none' })
      return
    }
    wx.showModal({
      title: '对处理结果不满意',
      content: '将由上一级单位复核，确定提交吗？',
      success: (res) => res.confirm && this.send(false)
    })
  },

  async send(satisfied) {
    this.setData({ sending: true })
    try {
      const text = this.data.comment.trim()
      const view = await api.feedback(
        this.data.ticket,
        { satisfied, comment: text, reason: text },
        this.feedbackSubmission
      )
      this.setData({ view: present(view), comment: '' })
      wx.showToast({ title: '感谢您的反馈', icon: 'success' })
    } catch (e) {
      api.showError(e)
    } finally {
      this.setData({ sending: false })
    }
  }
})
