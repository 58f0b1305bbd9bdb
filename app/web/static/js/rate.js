// A job's own speed and ETA: an exponential moving average of its bytes over time.
//
// Progress arrives in bursts (each file's worker publishes every quarter second, several
// files at once), so instantaneous rates jump about; averaged over about five seconds they
// do not, and an ETA from the average counts down steadily instead of leaping 36 → 18 → 33 s.

const TAU_S = 5; // the average's time constant
const MIN_STEP_S = 0.5; // samples closer together than this wait for the next one
const WARM_UP_S = 3; // nothing is shown before this much data

export class RateMeter {
  constructor() {
    this.reset();
  }

  reset() {
    this.moving = false; // bytes have moved since the start
    this.start(null, 0);
  }

  start(now, done) {
    this.first = this.at = now; // seconds
    this.firstDone = this.done = done;
    this.rate = null; // bytes per second
  }

  // One observation: `done` bytes at `now` seconds.
  sample(now, done) {
    if (this.first === null || done < this.done) {
      // A start, or bytes that went back (a file restarted): begin again.
      this.moving = false;
      this.start(now, done);
      return;
    }
    if (!this.moving) {
      // The wait for the first byte (a worker claiming the file, connecting) is not data:
      // the clock starts when the bytes do.
      this.moving = done > this.firstDone;
      this.start(now, done);
      return;
    }
    const dt = now - this.at;
    if (dt < MIN_STEP_S) return;
    if (now - this.first < TAU_S || this.rate === null) {
      // Until there is a full time constant of data, the plain average since the start.
      this.rate = (done - this.firstDone) / (now - this.first);
    } else {
      const weight = 1 - Math.exp(-dt / TAU_S);
      this.rate += weight * ((done - this.done) / dt - this.rate);
    }
    this.at = now;
    this.done = done;
  }

  // Bytes per second, or null until a few seconds of data are in.
  speed() {
    if (this.rate === null || this.at - this.first < WARM_UP_S) return null;
    return this.rate;
  }

  // Seconds left for `remaining` bytes, or null while the speed is unknown or nil.
  eta(remaining) {
    const speed = this.speed();
    if (speed === null || speed < 1 || remaining === null) return null;
    return remaining / speed;
  }
}
