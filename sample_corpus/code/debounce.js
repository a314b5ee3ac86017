// Debounce and throttle: limit how often a function runs in response to rapid events
// such as keystrokes, scrolling or window resizing.

/**
 * debounce waits until calls have stopped for `wait` milliseconds, then runs fn once
 * with the last arguments. Good for search-as-you-type boxes.
 */
export function debounce(fn, wait = 250) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

/**
 * throttle runs fn at most once every `interval` milliseconds, however often it is called.
 * Good for scroll handlers.
 */
export function throttle(fn, interval = 100) {
  let last = 0;
  return (...args) => {
    const now = Date.now();
    if (now - last >= interval) {
      last = now;
      fn(...args);
    }
  };
}
