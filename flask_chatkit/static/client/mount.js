/*
 * flask_chatkit reference client, part 10 of 10 (order and scope: see base.js).
 *
 * The public API: window.FlaskChatKit.mount(element, options) and the handle
 * it returns, renderMarkdown, ChatKitError, version.
 */

/** Mount a chat into *element*; returns a handle with a few methods. */
function mount(element, options) {
  const chat = new Chat(element, options);
  return {
    destroy: () => chat.destroy(),
    send: (text) => chat.send(text),
    openThread: (id) => chat.openThread(id),
    newThread: () => chat.newThread(),
    stop: () => chat.stopAnswer(),
    get threadId() {
      return chat.thread ? chat.thread.id : null;
    },
  };
}

// beside chatkit-fetch.js's FlaskChatKit.fetch, if that came first
global.FlaskChatKit = Object.assign(global.FlaskChatKit || {}, {mount, renderMarkdown, ChatKitError, version: "1"});
