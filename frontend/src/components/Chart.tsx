// TradingView's lightweight-charts, for equity curves and candlesticks with volume.
import {
  CandlestickSeries, ColorType, HistogramSeries, LineSeries, createChart,
  type IChartApi, type UTCTimestamp,
} from "lightweight-charts";
import { useEffect, useRef } from "react";

export interface LinePoint { time: number; value: number }
export interface Candle { time: number; open: number; high: number; low: number; close: number; volume: number }

function css(name: string, fallback: string): string {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function baseChart(el: HTMLElement, height: number): IChartApi {
  return createChart(el, {
    height,
    autoSize: true,
    layout: { background: { type: ColorType.Solid, color: "transparent" }, textColor: css("--text", "#111"),
      attributionLogo: false },
    grid: { vertLines: { color: "rgba(128,128,128,0.15)" }, horzLines: { color: "rgba(128,128,128,0.15)" } },
    timeScale: { timeVisible: true },
  });
}

/** One or more lines (equity, drawdown), each on its own price scale when `separate`. */
export function LineChart({ series, height = 280, label }: {
  series: { name: string; points: LinePoint[]; colour?: string; separate?: boolean }[];
  height?: number;
  label: string;
}) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
    const chart = baseChart(el.current, height);
    series.forEach((s, i) => {
      const line = chart.addSeries(LineSeries, {
        color: s.colour ?? (i === 0 ? css("--primary", "#0a2540") : css("--secondary", "#00d4b0")),
        lineWidth: 2, title: s.name, priceScaleId: s.separate ? `s${i}` : "right",
      });
      line.setData(s.points.map((p) => ({ time: p.time as UTCTimestamp, value: p.value })));
      if (s.separate) chart.priceScale(`s${i}`).applyOptions({ scaleMargins: { top: 0.75, bottom: 0 } });
    });
    chart.timeScale().fitContent();
    el.current.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
    return () => chart.remove();
  }, [series, height]);
  return <div className="chart" ref={el} role="img" aria-label={label} />;
}

export function CandleChart({ candles, height = 360, label }: { candles: Candle[]; height?: number; label: string }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
    const chart = baseChart(el.current, height);
    const price = chart.addSeries(CandlestickSeries, {
      upColor: css("--secondary", "#00d4b0"), downColor: "#e5484d", borderVisible: false,
      wickUpColor: css("--secondary", "#00d4b0"), wickDownColor: "#e5484d",
    });
    price.setData(candles.map((c) => ({ time: c.time as UTCTimestamp, open: c.open, high: c.high, low: c.low,
      close: c.close })));
    const volume = chart.addSeries(HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" } });
    chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    volume.setData(candles.map((c) => ({ time: c.time as UTCTimestamp, value: c.volume,
      color: c.close >= c.open ? "rgba(0,180,140,0.4)" : "rgba(229,72,77,0.4)" })));
    chart.timeScale().fitContent();
    el.current.dataset.points = String(candles.length);
    return () => chart.remove();
  }, [candles, height]);
  return <div className="chart" ref={el} role="img" aria-label={label} />;
}

/** Drawdown (0 or negative fraction) of an equity curve at each point. */
export function drawdown(points: LinePoint[]): LinePoint[] {
  let peak = -Infinity;
  return points.map((p) => {
    peak = Math.max(peak, p.value);
    return { time: p.time, value: peak > 0 ? p.value / peak - 1 : 0 };
  });
}
