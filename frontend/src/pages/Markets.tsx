import { useEffect, useMemo, useState } from "react";
import { useClient, useQuery, useSubscription } from "urql";
import { CandleChart, type Candle } from "../components/Chart";
import { Empty, Errors, Loading, Pager, Panel, when, type PageInfo } from "../components/common";
import { fromCombined, type ShownError } from "../lib/errors";
import { comingDates, firstRound, localMidnight, secondRound, sessionsQuery, type SessionAnswer,
  type VenueDay } from "../lib/sessions";

interface Session { status: string; opensAt: string | null; closesAt: string | null; nextOpen: string | null; nextClose: string | null }
interface Venue { mic: string; name: string; timezone: string; session: Session }
interface Instrument { key: string; symbol: string; mic: string; name: string; currency: string; assetClass: string }

const WORLD = `query MarketsWorld { followTheSun(horizon: "P1D") { at until leader leaderVenues uncoveredVenues
  handoffs { at fromRegion toRegion venues } }
  regions { code name venues { mic name timezone session { status opensAt closesAt nextOpen nextClose } } } }`;
const INSTRUMENTS = `query MarketsInstruments($search: String, $after: String) { instruments(search: $search, first: 15, after: $after) {
  edges { node { key symbol mic name currency assetClass } } pageInfo { hasNextPage endCursor } } }`;
const BARS = `query MarketsBars($instrument: String!, $start: DateTime!, $end: DateTime!) {
  bars(instrument: $instrument, start: $start, end: $end, interval: "1d") { start open high low close volume } }`;
const QUOTES = `subscription MarketsQuotes($instruments: [String!]!) { quotes(instruments: $instruments, intervalMs: 1000) {
  instrument at bid ask bidSize askSize } }`;

function Clock({ timezone }: { timezone: string }) {
  const [now, setNow] = useState(() => new Date());
  useEffect(() => {
    const t = setInterval(() => setNow(new Date()), 1000);
    return () => clearInterval(t);
  }, []);
  let text: string;
  try {
    text = now.toLocaleTimeString([], { timeZone: timezone, hour: "2-digit", minute: "2-digit" });
  } catch {
    text = "—";
  }
  return <span className="clock">{text}</span>;
}

export function Markets() {
  const [world] = useQuery<{ followTheSun: { at: string; leader: string; leaderVenues: string[]; uncoveredVenues: string[];
    handoffs: { at: string; fromRegion: string; toRegion: string; venues: string[] }[] };
    regions: { code: string; name: string; venues: Venue[] }[] }>({ query: WORLD });
  const [search, setSearch] = useState("");
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [instruments] = useQuery<{ instruments: { edges: { node: Instrument }[]; pageInfo: PageInfo } }>({
    query: INSTRUMENTS, variables: { search: search || null, after: cursors[cursors.length - 1] },
  });
  const [chosen, setChosen] = useState<string>("AAPL.XNAS");
  const [venue, setVenue] = useState<Venue | null>(null);
  const sun = world.data?.followTheSun;
  return (
    <div className="page markets">
      <h1>Markets</h1>
      <Errors errors={fromCombined(world.error)} />
      {world.fetching && !world.data ? <Loading what="markets" /> : null}
      {sun ? (
        <Panel title="Follow the sun" testId="follow-the-sun">
          <p>Leading now: <b>{sun.leader}</b> ({sun.leaderVenues.join(", ") || "no venue open"})</p>
          {sun.uncoveredVenues.length ? <p className="meta">Not covered now: {sun.uncoveredVenues.join(", ")}</p> : null}
          {sun.handoffs.length ? (
            <ol className="handoffs" aria-label="next hand-offs">{sun.handoffs.map((h, i) => (
              <li key={i}><b>{when(h.at)}</b> <Countdown at={h.at} />: {h.fromRegion} → {h.toRegion}
                {h.venues.length ? ` (${h.venues.join(", ")})` : ""}</li>))}</ol>
          ) : <Empty>No hand-off in the next day.</Empty>}
        </Panel>
      ) : null}
      <div className="regions">
        {(world.data?.regions ?? []).map((r) => (
          <Panel key={r.code} title={r.name}>
            <table>
              <thead><tr><th>Venue</th><th>Local</th><th>Status</th><th>Next</th></tr></thead>
              <tbody>{r.venues.map((v) => (
                <tr key={v.mic} tabIndex={0} aria-selected={venue?.mic === v.mic} onClick={() => setVenue(v)}
                  onKeyDown={(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); setVenue(v); } }}
                  data-venue={v.mic}><td title={v.name}>{v.mic}</td><td><Clock timezone={v.timezone} /></td>
                  <td><span className={`status s-${v.session.status}`}>{v.session.status}</span></td>
                  <td>{v.session.status === "OPEN" ? `closes ${when(v.session.closesAt ?? v.session.nextClose)}`
                    : `opens ${when(v.session.nextOpen)}`}</td></tr>
              ))}</tbody>
            </table>
          </Panel>
        ))}
      </div>
      {venue ? <VenueCalendar venue={venue} onClose={() => setVenue(null)} /> : (
        <p className="meta">Choose a venue (click or Enter) for its coming sessions, breaks and holidays.</p>)}
      <div className="grid two wide-right">
        <Panel title="Instruments" testId="instruments"
          actions={<input type="search" aria-label="search instruments" placeholder="symbol, name or ISIN" value={search}
            onChange={(e) => { setSearch(e.target.value); setCursors([null]); }} />}>
          <Errors errors={fromCombined(instruments.error)} />
          {instruments.fetching && !instruments.data ? <Loading /> : !instruments.data?.instruments.edges.length
            ? <Empty>No instruments match.</Empty> : (
            <table>
              <tbody>{instruments.data.instruments.edges.map(({ node: i }) => (
                <tr key={i.key} aria-selected={i.key === chosen} onClick={() => setChosen(i.key)} tabIndex={0}
                  onKeyDown={(e) => { if (e.key === "Enter") setChosen(i.key); }}>
                  <td>{i.key}</td><td>{i.name}</td><td>{i.currency}</td></tr>
              ))}</tbody>
            </table>
          )}
          <Pager pageInfo={instruments.data?.instruments.pageInfo} cursors={cursors} onPage={setCursors} />
        </Panel>
        <InstrumentChart instrument={chosen} />
      </div>
    </div>
  );
}

function InstrumentChart({ instrument }: { instrument: string }) {
  const range = useMemo(() => {
    const end = new Date();
    const start = new Date(end.getTime() - 200 * 86_400_000);
    return { start: start.toISOString(), end: end.toISOString() };
  }, []);
  const [bars] = useQuery<{ bars: { start: string; open: string; high: string; low: string; close: string; volume: string }[] }>({
    query: BARS, variables: { instrument, ...range },
  });
  const [quote] = useSubscription<{ quotes: { instrument: string; bid: string; ask: string; at: string }[] }>({
    query: QUOTES, variables: { instruments: [instrument] },
  });
  const candles: Candle[] = useMemo(() => (bars.data?.bars ?? []).map((b) => ({
    time: Math.floor(new Date(b.start).getTime() / 1000), open: Number(b.open), high: Number(b.high),
    low: Number(b.low), close: Number(b.close), volume: Number(b.volume) })), [bars.data]);
  const q = quote.data?.quotes[0];
  return (
    <Panel title={instrument} testId="instrument-chart"
      actions={q ? <span className="quote">bid {q.bid} · ask {q.ask}</span> : <span className="quote">no live quote</span>}>
      <Errors errors={[...fromCombined(bars.error), ...fromCombined(quote.error)]} />
      {bars.fetching && !bars.data ? <Loading what="bars" /> : candles.length
        ? <CandleChart candles={candles} label={`${instrument} daily candles`} /> : <Empty>No bars.</Empty>}
    </Panel>
  );
}

function Countdown({ at }: { at: string }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 30_000);
    return () => clearInterval(t);
  }, []);
  const minutes = Math.round((Date.parse(at) - now) / 60_000);
  if (!Number.isFinite(minutes)) return null;
  const text = minutes <= 0 ? "now" : minutes < 60 ? `in ${minutes} min` : `in ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  return <span className="meta">({text})</span>;
}

const DAYS = 14;

function VenueCalendar({ venue, onClose }: { venue: Venue; onClose: () => void }) {
  const client = useClient();
  const [days, setDays] = useState<VenueDay[] | null>(null);
  const [errors, setErrors] = useState<ShownError[]>([]);
  useEffect(() => {
    let stale = false;
    setDays(null);
    setErrors([]);
    void (async () => {
      const dates = comingDates(Date.now(), venue.timezone, DAYS);
      const first = await client.query(sessionsQuery(venue.mic, dates.map((d) => localMidnight(d, venue.timezone))), {},
        { requestPolicy: "network-only" }).toPromise();
      if (stale) return;
      if (first.error || !first.data) { setErrors(fromCombined(first.error)); setDays([]); return; }
      const answers = dates.map((_, i) => first.data.venue[`d${i}`] as SessionAnswer);
      const round = firstRound(dates, answers, venue.timezone);
      if (!round.probes.length) { setDays(round.days); return; }
      const second = await client.query(sessionsQuery(venue.mic, round.probes.map((p) => p.at)), {},
        { requestPolicy: "network-only" }).toPromise();
      if (stale) return;
      setErrors(fromCombined(second.error));
      const more = round.probes.map((_, i) => second.data?.venue?.[`d${i}`] as SessionAnswer);
      setDays(secondRound(round.days, round.probes, more));
    })();
    return () => { stale = true; };
  }, [venue, client]);
  const local = (iso: string | undefined) => iso ? new Date(iso).toLocaleTimeString([], {
    timeZone: venue.timezone, hour: "2-digit", minute: "2-digit" }) : "—";
  return (
    <Panel title={`${venue.mic} · ${venue.name} · next ${DAYS} days (${venue.timezone})`} testId="venue-calendar"
      actions={<button type="button" onClick={onClose}>Close</button>}>
      <Errors errors={errors} />
      {days === null ? <Loading what="sessions" /> : !days.length ? <Empty>No sessions.</Empty> : (
        <table aria-label="venue sessions">
          <thead><tr><th>Day</th><th>Status</th><th>Opens</th><th>Breaks</th><th>Closes</th></tr></thead>
          <tbody>{days.map((d) => (
            <tr key={d.date} data-day={d.date} data-kind={d.kind}>
              <td>{new Date(`${d.date}T12:00:00Z`).toLocaleDateString([], { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" })}</td>
              <td><span className={`status s-${d.kind}`}>{d.kind}</span></td>
              <td>{local(d.opens)}</td>
              <td>{d.breaks.length ? d.breaks.map((b) => `${local(b.start)}–${local(b.end)}`).join(", ") : "—"}</td>
              <td>{local(d.closes)}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
    </Panel>
  );
}
